"""Window cutting keeps file identity; vocabularies see training files only."""

from __future__ import annotations

import numpy as np
import pytest

from runtrace.represent.synthetic import synthetic_dataset
from runtrace.represent.vocabulary import Lexicon, Vocabulary
from runtrace.represent.windows import WindowConfig, cut_windows, window_starts


def test_sliding_windows_with_stride_cover_the_tail() -> None:
    cfg = WindowConfig("sliding", length=4, stride=3)
    np.testing.assert_array_equal(window_starts(10, cfg), [0, 3, 6])
    np.testing.assert_array_equal(window_starts(11, cfg), [0, 3, 6, 7])  # last window ends at the end
    np.testing.assert_array_equal(window_starts(3, cfg), [0])  # short: one window, all of it
    np.testing.assert_array_equal(window_starts(12, WindowConfig("sliding", length=4)), [0, 4, 8])
    capped = WindowConfig("sliding", length=2, stride=1, max_windows=3)
    np.testing.assert_array_equal(window_starts(11, capped), [0, 4, 9])


def test_first_n_and_sampled_windows() -> None:
    np.testing.assert_array_equal(window_starts(1000, WindowConfig("first-n", length=100)), [0])
    starts = window_starts(1000, WindowConfig("sampled", length=100, count=4))
    np.testing.assert_array_equal(starts, [0, 300, 600, 900])  # start, middle and end of the run
    assert len(window_starts(150, WindowConfig("sampled", length=100, count=8))) <= 8


@pytest.mark.parametrize("mode", ["sliding", "first-n", "sampled"])
def test_windows_keep_their_file_and_their_tokens(mode: str) -> None:
    data = synthetic_dataset("ism", 10, min_length=5, max_length=200, seed=3)
    idx = np.array([7, 2, 5])
    windows = cut_windows(data, idx, WindowConfig(mode, length=32, stride=16, count=3))
    assert set(windows.file_index.tolist()) == {7, 2, 5}  # rows of the dataset, not positions in idx
    for k, tokens in enumerate(windows.arrays(data)):
        f, s = int(windows.file_index[k]), int(windows.starts[k])
        np.testing.assert_array_equal(tokens, data.sequence(f)[s : s + 32])
        assert 1 <= len(tokens) <= 32
    assert list(windows.files()) == [7, 2, 5]
    sub = windows.subset(np.flatnonzero(windows.file_index == 2))
    assert set(sub.file_index.tolist()) == {2}


def test_empty_sequence_is_one_empty_window() -> None:
    assert list(window_starts(0, WindowConfig("sliding", length=8))) == [0]


def test_bad_window_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        WindowConfig("tumbling")
    with pytest.raises(ValueError):
        WindowConfig(length=0)


def test_vocabulary_is_fitted_on_training_documents_only() -> None:
    lexicon = Lexicon(["mov", "push", "call", "only-in-test", "rare"])
    train_docs = [np.array([0, 1, 2, 0]), np.array([0, 1, 4]), np.array([0, 2])]
    vocab = Vocabulary.fit(lexicon, train_docs, min_documents=2)
    assert vocab.tokens[:2] == ["<pad>", "<oov>"]
    assert vocab.tokens[2:] == ["mov", "push", "call"]  # by frequency; "rare" is in one file only
    assert "only-in-test" not in vocab and "rare" not in vocab
    test_sequence = np.array([3, 0, 4, 1])
    np.testing.assert_array_equal(
        vocab.encode(test_sequence, lexicon), [Vocabulary.OOV, 2, Vocabulary.OOV, 3]
    )


def test_vocabulary_maps_by_string_across_lexicons_and_round_trips() -> None:
    vocab = Vocabulary.fit(["a", "b", "c"], [np.array([0, 1, 2]), np.array([2, 1])], min_documents=1)
    other = Lexicon(["z", "c", "a"])  # another dataset, another id order
    np.testing.assert_array_equal(
        vocab.lookup_table(other), [Vocabulary.OOV, vocab.index["c"], vocab.index["a"]]
    )
    assert vocab.lookup_table(other) is vocab.lookup_table(other)  # cached per lexicon
    again = Vocabulary.from_json(vocab.to_json())
    assert again.tokens == vocab.tokens
    capped = Vocabulary.fit(["a", "b", "c"], [np.array([0, 1, 2, 2])], max_size=3)
    assert capped.tokens == ["<pad>", "<oov>", "c"]
