"""Loss weights: class balance, and each file's windows sharing one file's weight."""

from __future__ import annotations

import numpy as np

from runtrace.represent.windows import Windows


def class_weight(unit_labels: np.ndarray, mode: str | None) -> np.ndarray:
    """Weight per class (index 0 benign, 1 malicious): "balanced" makes both classes weigh the same."""
    if mode != "balanced":
        return np.ones(2)
    counts = np.bincount(unit_labels, minlength=2).astype(np.float64)
    return np.where(counts > 0, counts.sum() / (2 * np.maximum(counts, 1)), 0.0)


def mass_balanced(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`weights` rescaled per class so that both classes' weights sum to the same total (the file count's
    half each): the class balance of "balanced", kept when files carry weights of their own."""
    labels, weights = np.asarray(labels), np.asarray(weights, dtype=np.float64)
    out = np.zeros_like(weights)
    for label in (0, 1):
        mass = weights[labels == label].sum()
        if mass > 0:
            out[labels == label] = weights[labels == label] * (len(labels) / 2) / mass
    return out


def window_weights(labels: np.ndarray, windows: Windows, file_balanced: bool, mode: str | None) -> np.ndarray:
    """Loss weight per window: class balance over training files (or windows), and with file_balanced
    each file's windows share one file's weight, so long traces do not dominate."""
    files, inverse, per_file = np.unique(windows.file_index, return_inverse=True, return_counts=True)
    if file_balanced:
        unit_labels, window_share = labels[files], 1.0 / per_file[inverse]
    else:
        unit_labels, window_share = labels[windows.file_index], np.ones(len(windows))
    weight = class_weight(unit_labels, mode)
    return (weight[labels[windows.file_index]] * window_share).astype(np.float32)
