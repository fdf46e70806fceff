"""Finished folds saved as an evaluation goes, so a run stopped after hours resumes where it was.

Each fold of each model is written when it finishes: its test-row scores and its `FoldRecord`.  The
folder is named by a hash of everything that decides the fold's result - the dataset's files and lexicon,
the protocol, the model and the run configuration - so a run with other arguments or a rebuilt dataset
never picks up stale folds; it simply finds none and computes them.  (`session` decides when a report
directory's saved folds are used, kept or forgotten.)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from runtrace.models.interface import SequenceData

DIR_NAME = "checkpoints"


def dataset_content_hash(data: SequenceData) -> str:
    """Hash of the dataset's file table (sha256s, labels, groups, joined metadata) and lexicon: a saved
    fold is reused only on the very data it was computed on.  (The reports' `fingerprint` names only
    the labelled file set: `build_results.labelled_files_fingerprint`.)"""
    digest = hashlib.sha256(data.representation.encode())
    for name in data.files.column_names:
        digest.update(name.encode())
        digest.update(json.dumps(data.files.column(name).to_pylist(), default=str).encode())
    digest.update("\n".join(data.lexicon).encode())
    return digest.hexdigest()


class FoldStore:
    """Saved folds of one model under one protocol on one dataset."""

    def __init__(self, root: Path, content_hash: str, protocol: str, model: str, config) -> None:
        settings = json.dumps(
            {"dataset": content_hash, "protocol": protocol, "model": model, "config": asdict(config)},
            sort_keys=True,
            default=str,
        )
        key = hashlib.sha256(settings.encode()).hexdigest()[:16]
        self.dir = Path(root) / f"{protocol}-{model}-{key}"

    def _paths(self, index: int) -> tuple[Path, Path]:
        return self.dir / f"fold-{index}.npz", self.dir / f"fold-{index}.json"

    def load(self, index: int, record_type):
        """(scores, record) of a finished fold, or None when it has not finished (or cannot be read)."""
        arrays_path, record_path = self._paths(index)
        if not record_path.exists():  # written last: its presence means the fold is complete
            return None
        try:
            fields = json.loads(record_path.read_text())
            with np.load(arrays_path) as z:
                scores, test_rows = z["scores"], z["test_rows"]
        except (OSError, ValueError, KeyError):
            return None
        return scores, record_type(**fields, test_rows=test_rows)

    def save(self, index: int, scores: np.ndarray, record) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        arrays_path, record_path = self._paths(index)
        fields = {k: v for k, v in asdict(record).items() if k != "test_rows"}
        write_atomically(arrays_path, lambda fh: np.savez(fh, scores=scores, test_rows=record.test_rows))
        write_atomically(record_path, lambda fh: fh.write(json.dumps(fields, default=_plain).encode()))


def finished_folds(root: Path) -> int:
    return sum(1 for _ in Path(root).glob("*/fold-*.json")) if Path(root).is_dir() else 0


def _plain(value):
    """numpy scalars in fold histories, as JSON numbers."""
    return value.item() if isinstance(value, np.generic) else str(value)


def write_atomically(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        write(fh)
    os.replace(tmp, path)
