"""Per-file detection metrics, each with a stratified bootstrap interval and the counts behind it.

Threshold-dependent figures (accuracy, FPR, TPR, precision, F1) take the decisions the protocol made
with thresholds fitted on training folds.  Ranking figures (ROC-AUC, TPR at a fixed FPR) take the scores
alone: "TPR at FPR = 1 %" is the best TPR the ROC curve reaches while FPR stays at or below 1 %, a
property of the ranking like AUC, not the figure a deployed threshold would give.  When a set has fewer
than 1/FPR benign files, only FPR = 0 fits under the target, which `resolution_limited` reports.

The figures come out as the result document's types (`result_document.FileMetrics`, `Counts`,
`Estimate`), which `metrics.json` is written from.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score, roc_curve

from runtrace.evaluate.result_document import BootstrapSettings, Counts, Estimate, FileMetrics, WindowMetrics

FPR_TARGETS = (0.01, 0.001)
METRIC_NAMES = (
    "accuracy",
    "balanced_accuracy",
    "fpr",
    "tpr",
    "precision",
    "f1",
    "roc_auc",
    "tpr_at_fpr_1pct",
    "tpr_at_fpr_0.1pct",
)


def _fpr_metric_name(target: float) -> str:
    return f"tpr_at_fpr_{target * 100:g}pct"


def confusion_counts(y: np.ndarray, pred: np.ndarray) -> Counts:
    y = np.asarray(y, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    return Counts.of(
        tp=int(np.sum(y & pred)),
        fp=int(np.sum(~y & pred)),
        tn=int(np.sum(~y & ~pred)),
        fn=int(np.sum(y & ~pred)),
    )


def _ratio(num: float, den: float) -> float:
    # An undefined ratio (no benign files, nothing flagged, ...) is NaN, never a silent 0.
    return num / den if den else float("nan")


def roc_curve_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, threshold) at every distinct score, starting at (0, 0) with threshold +inf.

    Tied scores move together: a threshold cannot separate files with the same score, so no partial
    credit is given inside a tie (the area is then the Mann-Whitney statistic with ties = 1/2).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # one class only: NaN rates, said below
        return roc_curve(
            np.asarray(y, dtype=np.int64), np.asarray(score, dtype=np.float64), drop_intermediate=False
        )


def _ranking_metrics(y: np.ndarray, score: np.ndarray, fpr_targets: tuple[float, ...]) -> dict[str, float]:
    y = np.asarray(y, dtype=np.int64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    out: dict[str, float] = {}
    if n_pos == 0 or n_neg == 0:
        out["roc_auc"] = float("nan")
        for t in fpr_targets:
            out[_fpr_metric_name(t)] = float("nan")
        return out
    fpr, tpr, _ = roc_curve_points(y, score)
    out["roc_auc"] = float(roc_auc_score(y, score))
    fps = np.rint(fpr * n_neg)
    for t in fpr_targets:
        # Compare counts, not floats: FPR <= t means at most floor(t * n_benign) false positives.
        allowed = np.floor(t * n_neg + 1e-9)
        out[_fpr_metric_name(t)] = float(tpr[fps <= allowed].max())
    return out


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    return _ranking_metrics(y, score, ())["roc_auc"]


def tpr_at_fpr(y: np.ndarray, score: np.ndarray, max_fpr: float) -> float:
    return _ranking_metrics(y, score, (max_fpr,))[_fpr_metric_name(max_fpr)]


def point_metrics(
    y: np.ndarray, score: np.ndarray, pred: np.ndarray, fpr_targets: tuple[float, ...] = FPR_TARGETS
) -> dict[str, float]:
    """Every metric once, on the given files."""
    c = confusion_counts(y, pred)
    tpr = _ratio(c.tp, c.n_malicious)
    fpr = _ratio(c.fp, c.n_benign)
    precision = _ratio(c.tp, c.tp + c.fp)
    f1 = _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)
    out = {
        "accuracy": _ratio(c.tp + c.tn, c.n),
        "balanced_accuracy": (tpr + (1.0 - fpr)) / 2.0,
        "fpr": fpr,
        "tpr": tpr,
        "precision": precision,
        "f1": f1,
    }
    out.update(_ranking_metrics(y, score, fpr_targets))
    return out


def stratified_bootstrap_indices(y: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) index matrix; each resample keeps the number of malicious and benign files.

    Stratifying keeps the class balance fixed, so FPR and TPR intervals reflect sampling of files, not
    random swings in how many benign files a resample happens to hold.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=bool)
    parts = []
    for members in (np.flatnonzero(y), np.flatnonzero(~y)):
        if len(members):
            parts.append(members[rng.integers(0, len(members), size=(n_resamples, len(members)))])
    if not parts:
        return np.empty((n_resamples, 0), dtype=np.int64)
    return np.concatenate(parts, axis=1)


def _multiplicities(idx: np.ndarray, n: int) -> np.ndarray:
    return np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)


def resampled_metrics(
    y: np.ndarray,
    score: np.ndarray,
    pred: np.ndarray,
    idx: np.ndarray,
    fpr_targets: tuple[float, ...] = FPR_TARGETS,
    chunk: int | None = None,
) -> dict[str, np.ndarray]:
    """`point_metrics` on every resample (rows of `idx`) at once: the same figures, vectorised.

    A resample is a multiplicity per file.  Scores are binned by distinct value once; per resample,
    the malicious and benign weight in each bin give the ROC sweep (AUC with ties at 1/2, TPR at FPR
    with no split ties) exactly as `roc_curve_points` does, without sorting each resample again.
    """
    y = np.asarray(y, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    n = len(y)
    _, bins = np.unique(score, return_inverse=True)
    n_bins = int(bins.max()) + 1 if n else 0
    onehot = sp.csr_matrix((np.ones(n), (np.arange(n), bins)), shape=(n, n_bins))
    # Resamples per step: (resamples x bins) arrays of ~250k values stay in cache, measured fastest.
    chunk = chunk or max(1, min(100, 250_000 // max(n_bins, 1)))
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(idx), chunk):
        w = _multiplicities(idx[start : start + chunk], n)
        tp, fn = w @ (y & pred), w @ (y & ~pred)
        fp, tn = w @ (~y & pred), w @ (~y & ~pred)
        n_pos, n_neg = tp + fn, fp + tn
        with np.errstate(divide="ignore", invalid="ignore"):
            tpr, fpr = tp / n_pos, fp / n_neg
            figures = {
                "accuracy": (tp + tn) / (n_pos + n_neg),
                "balanced_accuracy": (tpr + 1.0 - fpr) / 2.0,
                "fpr": fpr,
                "tpr": tpr,
                "precision": tp / (tp + fp),
                "f1": 2 * tp / (2 * tp + fp + fn),
            }
            pos_w = np.asarray((onehot.T @ (w * y).T).T)  # (resamples, bins), bins by ascending score
            neg_w = np.asarray((onehot.T @ (w * ~y).T).T)
            below = np.cumsum(neg_w, axis=1) - neg_w
            figures["roc_auc"] = (pos_w * (below + 0.5 * neg_w)).sum(axis=1) / (n_pos * n_neg)
            # Thresholds swept from the top: everything at or above each bin is flagged.
            tp_at = np.cumsum(pos_w[:, ::-1], axis=1)
            fp_at = np.cumsum(neg_w[:, ::-1], axis=1)
            for t in fpr_targets:
                allowed = np.floor(t * n_neg + 1e-9)[:, None]
                best = np.where(fp_at <= allowed, tp_at, 0.0).max(axis=1, initial=0.0)
                figures[_fpr_metric_name(t)] = best / n_pos
        undefined = (n_pos == 0) | (n_neg == 0)
        for name in ("roc_auc", *(_fpr_metric_name(t) for t in fpr_targets)):
            figures[name] = np.where(undefined, np.nan, figures[name])
        for name, values in figures.items():
            out.setdefault(name, []).append(np.asarray(values, dtype=np.float64))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def file_metrics(
    y: np.ndarray,
    score: np.ndarray,
    pred: np.ndarray,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    fpr_targets: tuple[float, ...] = FPR_TARGETS,
) -> FileMetrics:
    """Per-file metrics with percentile intervals from a stratified bootstrap over files; a figure that
    is undefined here (one class only, nothing flagged, ...) is None, as is an interval without draws."""
    y = np.asarray(y, dtype=np.int64)
    score = np.asarray(score, dtype=np.float64)
    pred = np.asarray(pred, dtype=bool)
    if not (len(y) == len(score) == len(pred)):
        raise ValueError("y, score and pred must have the same length")
    if np.isnan(score).any():
        raise ValueError("scores contain NaN")
    point = point_metrics(y, score, pred, fpr_targets)
    samples = {name: np.empty(0) for name in point}
    if n_resamples and len(y):
        samples = resampled_metrics(
            y, score, pred, stratified_bootstrap_indices(y, n_resamples, seed), fpr_targets
        )
    alpha = (1.0 - confidence) / 2.0
    estimates = {}
    for name, value in point.items():
        draws = samples[name][~np.isnan(samples[name])] if n_resamples else np.array([])
        if np.isnan(value):
            estimates[name] = Estimate(value=None)
        elif len(draws) == 0:
            estimates[name] = Estimate(value=float(value))
        else:
            low, high = np.quantile(draws, [alpha, 1.0 - alpha])
            estimates[name] = Estimate(value=float(value), low=float(low), high=float(high))
    counts = confusion_counts(y, pred)
    return FileMetrics(
        metrics=estimates,
        counts=counts,
        bootstrap=BootstrapSettings(n_resamples=n_resamples, confidence=confidence, seed=seed),
        resolution_limited={_fpr_metric_name(t): counts.n_benign * t < 1.0 for t in fpr_targets},
    )


def window_point_metrics(y: np.ndarray, score: np.ndarray, pred: np.ndarray) -> WindowMetrics:
    """Window-level figures: point values and counts only.

    No interval: windows cut from one file are not independent draws, so a bootstrap over windows
    would understate the uncertainty.  These are shown beside per-file figures, never instead.
    """
    values = point_metrics(y, score, pred)
    return WindowMetrics(
        metrics={k: (None if np.isnan(v) else float(v)) for k, v in values.items()},
        counts=confusion_counts(y, pred),
    )
