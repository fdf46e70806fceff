"""A file's score from its windows' outputs: the mean or max of window probabilities, or the
attention-weighted mean of window logits.  numpy only, so training, evaluation and the scanner (which
never imports torch) aggregate with the same code."""

from __future__ import annotations

import numpy as np


def sigmoid(x) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def logit(p, eps: float = 1e-12):
    """log(p / (1 - p)) with p clipped `eps` away from 0 and 1 (float32 graphs answer exactly 1.0 at
    times); a float for a float, an array for an array."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    out = np.log(p) - np.log1p(-p)
    return float(out) if out.ndim == 0 else out


def platt(score, slope: float, intercept: float):
    """Platt scaling of a score: sigmoid(slope * logit(score) + intercept), as `runtrace calibrate` fits
    it and the scanner applies it; a float for a float, an array for an array."""
    out = sigmoid(slope * np.asarray(logit(score)) + intercept)
    return float(out) if out.ndim == 0 else out


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


def aggregate_rows(logits: np.ndarray, scores: np.ndarray | None, mode: str) -> np.ndarray:
    """P(malicious) of K variants of one file at once: window logits (K, B) -> (K,)."""
    logits = np.asarray(logits, dtype=np.float64)
    if mode == "max":
        return sigmoid(logits).max(1)
    if mode == "attention" and scores is not None:
        weights = np.exp(scores - scores.max(1, keepdims=True))
        weights /= weights.sum(1, keepdims=True)
        return sigmoid((weights * logits).sum(1))
    return sigmoid(logits).mean(1)


def aggregate(logits: np.ndarray, scores: np.ndarray | None, mode: str) -> float:
    """One file's P(malicious) from its windows' logits (B,) and attention scores."""
    return float(
        aggregate_rows(np.asarray(logits)[None, :], None if scores is None else scores[None, :], mode)[0]
    )


def file_gradient(
    logits: np.ndarray, scores: np.ndarray | None, mode: str, target: str = "logit"
) -> tuple[np.ndarray, np.ndarray | None]:
    """d target / d window logits and d target / d attention scores (None without attention).

    target "probability": the file's P(malicious).  "logit": the file's score before the final
    sigmoid(s) — the mean of the window logits (mean aggregation), the top window's logit (max), the
    attention-pooled logit (attention) — which does not flatten out when P is close to 0 or 1."""
    if target not in ("probability", "logit"):
        raise ValueError(f"unknown gradient target {target!r}")
    logits = np.asarray(logits, dtype=np.float64)
    p = sigmoid(logits)
    slope = p * (1 - p) if target == "probability" else np.ones_like(p)
    if mode == "max":
        d = np.zeros_like(p)
        top = int(p.argmax())
        d[top] = slope[top]
        return d, None
    if mode == "attention" and scores is not None:
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        file_logit = float((weights * logits).sum())
        outer = float(sigmoid(file_logit) * (1 - sigmoid(file_logit))) if target == "probability" else 1.0
        return outer * weights, outer * weights * (logits - file_logit)
    return slope / len(p), None
