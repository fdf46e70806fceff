"""The estimator interface every file classifier implements, LSTMs and baselines alike.

The evaluation code only ever calls these two methods, scikit-learn style, so a baseline and an LSTM
are interchangeable inside a protocol.  `train_idx` / `idx` are row indices of `data.files`; whatever a
model learns (vocabularies, normalisation statistics, early stopping) comes from `train_idx` only.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from runtrace.represent.dataset import SequenceDataset


@runtime_checkable
class FileClassifier(Protocol):
    def fit(self, data: SequenceDataset, train_idx: np.ndarray) -> FileClassifier:
        """Learn from the files `train_idx` of `data` (and nothing else); returns self."""
        ...

    def predict_proba(self, data: SequenceDataset, idx: np.ndarray) -> np.ndarray:
        """P(malicious) for each file in `idx`, shape (len(idx),), float64 in [0, 1]."""
        ...
