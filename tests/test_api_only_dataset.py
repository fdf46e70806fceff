"""scripts/api_only_dataset.py keeps each file's API-call and argument tokens, in order, and nothing else,
with the files (and so the folds) of the source dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from runtrace.represent.dataset import SequenceDataset
from script_support import load_script


def _script():
    return load_script("api_only_dataset")


def _dataset(api: bool = True) -> SequenceDataset:
    lexicon = ["mov reg, reg", "api:kernel32.createfilea", "push reg", "arg:path:temp", "api:kernel32.sleep"]
    files = pa.table({"sha256": ["a" * 64, "b" * 64, "c" * 64], "label": [1, 0, 1], "group": ["x", "y", "z"]})
    # file a: mov, CreateFileA, arg, push; file b: mov, push (no API call); file c: Sleep, mov, Sleep
    tokens = np.array([0, 1, 3, 2, 0, 2, 4, 0, 4], dtype=np.int32)
    offsets = np.array([0, 4, 6, 9])
    return SequenceDataset("ism", files, lexicon, tokens, offsets, normalisation="registers", api=api)


def test_only_api_and_argument_tokens_are_kept_per_file(tmp_path: Path) -> None:
    derived, empty = _script().api_only(_dataset())
    assert [derived.sequence(i).tolist() for i in range(3)] == [[1, 3], [], [4, 4]]
    assert empty == 1
    assert derived.sha256s() == _dataset().sha256s() and list(derived.labels()) == [1, 0, 1]
    derived.save(tmp_path / "out")
    assert SequenceDataset.load(tmp_path / "out").sequence(2).tolist() == [4, 4]


def test_a_dataset_without_api_tokens_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    _dataset(api=False).save(tmp_path / "src")
    with pytest.raises(SystemExit, match="built with --no-api"):
        _script().main([str(tmp_path / "src"), str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="not a runtrace dataset"):
        _script().main([str(tmp_path / "missing"), str(tmp_path / "out")])
