"""The two shapes the evaluation code relies on, written as structural types.

Evaluation never imports a concrete dataset or model class to do its work: anything with these
attributes can be measured, which keeps the protocols testable with a tiny in-memory dataset and lets
baselines and LSTMs stand side by side.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa


@runtime_checkable
class SequenceData(Protocol):
    """What `runtrace.represent.dataset.SequenceDataset` offers: one token sequence per file."""

    representation: str  # "ism" or "bsm"
    files: pa.Table  # one row per file: sha256, label, group, arch, kind, n_instructions, stop_reason, ...
    lexicon: list[str]  # token id -> token string

    def labels(self) -> np.ndarray: ...

    def groups(self) -> np.ndarray: ...

    def sequence(self, i: int) -> np.ndarray: ...


@runtime_checkable
class FileClassifier(Protocol):
    """The estimator protocol (`runtrace.models.base.FileClassifier`): fit on some files, score others."""

    def fit(self, data: SequenceData, train_idx: np.ndarray) -> FileClassifier: ...

    def predict_proba(self, data: SequenceData, idx: np.ndarray) -> np.ndarray: ...
