"""Which windows an LSTM reads, and how a file's score comes from its windows' outputs."""

from __future__ import annotations

import numpy as np

from runtrace.models.batching import find_attribute
from runtrace.represent.encode import BSM, ISM
from runtrace.represent.windows import WindowConfig

AGGREGATIONS = ("mean", "max", "attention")
DEFAULT_WINDOWS = {
    ISM: WindowConfig("sampled", length=512, count=8),
    BSM: WindowConfig("sampled", length=256, count=8),
}


def resolve_window_config(configured: WindowConfig | None, data, representation: str) -> WindowConfig:
    """The configured windows, else the dataset's build-time defaults, else the representation's."""
    if configured is not None:
        return configured
    defaults = find_attribute(data, "window_defaults") if data is not None else None
    if defaults:
        return WindowConfig.from_json(defaults)
    return DEFAULT_WINDOWS[representation]


def aggregate_windows(
    file_index: np.ndarray, logits: np.ndarray, scores: np.ndarray | None, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """(distinct files, P(malicious) per file) from window logits: the mean or max of window
    probabilities, or (mode "attention") the attention-weighted mean of window logits."""
    files, inverse = np.unique(file_index, return_inverse=True)
    proba = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    if mode == "max":
        out = np.full(len(files), -np.inf)
        np.maximum.at(out, inverse, proba)
        return files, out
    if mode == "attention" and scores is not None:
        scores = scores.astype(np.float64)
        top = np.full(len(files), -np.inf)
        np.maximum.at(top, inverse, scores)
        weights = np.exp(scores - top[inverse])
        weights /= np.bincount(inverse, weights=weights, minlength=len(files))[inverse]
        file_logit = np.bincount(inverse, weights=weights * logits, minlength=len(files))
        return files, 1.0 / (1.0 + np.exp(-file_logit))
    return files, np.bincount(inverse, weights=proba, minlength=len(files)) / np.bincount(inverse)
