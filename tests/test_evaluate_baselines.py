import numpy as np
import pytest

from evaluate_fakes import make_dataset
from runtrace.evaluate.baselines import (
    MetadataBaseline,
    NgramCache,
    NgramFeaturizer,
    NgramLightGBM,
    NgramLogisticRegression,
    ngram_keys,
)
from runtrace.evaluate.guard import GuardedView, LeakError
from runtrace.evaluate.metrics import roc_auc
from runtrace.models.ngram import vocabulary_columns


def _halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(0).permutation(n)  # the fake's labels alternate by row; mix them
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def test_ngram_keys_are_distinct_per_order_and_position():
    keys = ngram_keys(np.array([1, 2, 1, 2]), vocab_size=5, orders=(1, 2, 3))
    assert len(keys) == 4 + 3 + 2
    uni, bi, tri = keys[:4], keys[4:7], keys[7:]
    assert uni[0] == uni[2] and bi[0] == bi[2] and tri[0] != tri[1]
    assert not set(uni) & set(bi) and not set(bi) & set(tri)


def test_exact_ngram_keys_are_the_mixed_radix_numbers_of_their_tokens_in_any_order_of_orders():
    tokens = [3, 0, 4, 9, 1, 4]  # 9 is above the vocabulary: it reads as the last id, 4
    for orders in ((1, 2, 3), (2, 3), (3, 1), (1, 2, 3, 4)):
        expected, offset = [], 0
        for n in orders:
            for i in range(len(tokens) - n + 1):
                digits = [min(t, 4) for t in tokens[i : i + n]]
                expected.append(offset + sum(d * 5 ** (n - 1 - j) for j, d in enumerate(digits)))
            offset += 5**n
        assert ngram_keys(np.array(tokens), vocab_size=5, orders=orders).tolist() == expected


def test_hashed_ngram_keys_follow_their_definition_when_the_radix_is_too_large():
    tokens, space, golden = [7, 2**40, 3, 7, 2**40], 2**41, 0x9E3779B97F4A7C15
    expected = []
    for n in (1, 2, 3):
        for i in range(len(tokens) - n + 1):
            key = n
            for t in tokens[i : i + n]:
                key = ((key ^ t) * golden) % 2**64
            expected.append(key)
    assert ngram_keys(np.array(tokens), vocab_size=space, orders=(1, 2, 3)).tolist() == expected


def test_vocabulary_columns_find_every_key_of_the_vocabulary_and_no_other():
    rng = np.random.default_rng(3)
    vocabulary = np.unique(rng.integers(0, 2**63, size=5000, dtype=np.uint64))
    keys = np.concatenate([rng.choice(vocabulary, 20000), rng.integers(0, 2**63, 20000, dtype=np.uint64)])
    rng.shuffle(keys)
    column = {int(k): i for i, k in enumerate(vocabulary)}
    expected = [column.get(int(k), -1) for k in keys]
    assert vocabulary_columns(vocabulary, keys).tolist() == expected
    assert vocabulary_columns(vocabulary[:0], keys[:3]).tolist() == [-1, -1, -1]


def test_ngram_vocabulary_is_built_from_training_rows_only():
    data = make_dataset(n_files=20)
    test_row = 7
    data._sequences[test_row] = np.full(50, 15, dtype=np.int32)  # n-grams seen nowhere else
    for i in range(20):
        if i != test_row:
            data._sequences[i] = data._sequences[i] % 15  # token 15 only ever in the test row
    train = np.setdiff1d(np.arange(20), [test_row])
    f = NgramFeaturizer(min_df=1).fit(GuardedView(data, train, "fit"), train)
    only_15 = {int(k) for k in ngram_keys(np.full(5, 15), len(data.lexicon) + 1, (1, 2, 3))}
    assert not only_15 & set(f.vocabulary_.tolist())
    # An unseen n-gram is simply absent from the test row's features.
    assert f.transform(data, np.array([test_row])).nnz == 0


def test_featurizer_cannot_read_test_rows_through_the_cache():
    data = make_dataset(n_files=10)
    cache = NgramCache()
    NgramFeaturizer(cache=cache).fit(data, np.arange(10))  # every row now cached
    with pytest.raises(LeakError):
        NgramFeaturizer(cache=cache).fit(GuardedView(data, np.arange(5), "fit"), np.arange(10))


@pytest.mark.parametrize("model_cls", [NgramLogisticRegression, NgramLightGBM])
def test_ngram_models_learn_the_synthetic_signal(model_cls):
    data = make_dataset(n_files=60, signal=0.3)
    train, test = _halves(60)
    model = model_cls(cache=NgramCache()).fit(data, train)
    scores = model.predict_proba(data, test)
    assert scores.shape == (30,) and np.all((scores >= 0) & (scores <= 1))
    assert roc_auc(data.labels()[test], scores) > 0.9


def test_metadata_baseline_sees_only_metadata():
    data = make_dataset(n_files=60)
    # Make kind a perfect shortcut: the audit must find it without reading any sequence.
    kinds = ["dll" if y else "exe" for y in data.labels()]
    data.files = data.files.set_column(data.files.column_names.index("kind"), "kind", [kinds])
    train, test = _halves(60)
    no_sequences = GuardedView(data, np.array([], dtype=np.int64), "fit")
    no_sequences._labels = data.labels()  # labels allowed, sequences not
    model = MetadataBaseline().fit(no_sequences, train)
    assert roc_auc(data.labels()[test], model.predict_proba(no_sequences, test)) == pytest.approx(1.0)
    assert "kind" in model.features_available_ and "size" not in model.features_available_


def test_manifest_columns_reach_the_shortcut_audit():
    import pyarrow as pa

    from runtrace.evaluate.manifest_join import join_manifest

    data = make_dataset(n_files=60)
    y = data.labels()
    shas = data.files.column("sha256").to_pylist()
    # The manifest lists files in another order, misses one, and knows their size: a perfect shortcut.
    manifest = pa.table(
        {
            "sha256": shas[::-1][:-1],
            "label": ["x"] * 59,
            "size": [int(1000 + 5000 * v) for v in y[::-1][:-1]],
            "archive_password": ["infected"] * 59,
            "compiler": ["msvc"] * 59,
        }
    )
    added, matched = join_manifest(data, manifest)
    assert matched == 59 and set(added) == {"size", "compiler"}  # provenance columns stay out
    assert data.files.column("size").to_pylist()[0] is None  # the file the manifest lacks is unknown
    assert data.files.column("size").to_pylist()[1] == 1000 + 5000 * y[1]
    train, test = _halves(60)
    model = MetadataBaseline().fit(data, train)
    assert "size" in model.features_available_
    assert roc_auc(y[test], model.predict_proba(data, test)) > 0.95


def test_neighbour_vote_fits_on_training_rows_only_and_scores_by_its_neighbours():
    from runtrace.evaluate.neighbour_vote import NeighbourVote, SignatureCache

    data = make_dataset(n_files=60, signal=0.3)
    train, test = _halves(60)
    cache = SignatureCache()
    model = NeighbourVote(cache=cache).fit(GuardedView(data, train, "fit"), train)
    assert len(model.index_) == len(train)
    scores = model.predict_proba(data, test)
    assert scores.shape == (30,) and np.all((scores >= 0) & (scores <= 1))
    # A file of the training fold is its own nearest neighbour (Jaccard 1): with no pseudo-neighbour its
    # label comes back; with one, the score lies between the label and the fold's share of malware.
    y = data.labels()[train].astype(float)
    alone = NeighbourVote(k=1, prior_weight=0.0, cache=cache).fit(data, train).predict_proba(data, train)
    assert np.array_equal(alone, y)
    smoothed = NeighbourVote(k=1, cache=cache).fit(data, train).predict_proba(data, train)
    assert np.allclose(smoothed, (y + y.mean()) / 2)
    assert roc_auc(data.labels()[test], scores) > 0.9
