"""Choosing the decision threshold from training scores only.

A threshold picked on the test fold is data snooping: it makes the reported FPR hit its target by
construction.  runtrace picks it on out-of-fold scores of the *training* fold (or of a held-out part of
it) for a target false-positive rate, and applies it unchanged to the test fold, where the FPR it really
gives is then measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtrace.evaluate.names import DEFAULT_TARGET_FPR
from runtrace.models.aggregation import logit, sigmoid

FALLBACK_THRESHOLD = 0.5


def threshold_for_fpr(y: np.ndarray, score: np.ndarray, target_fpr: float = DEFAULT_TARGET_FPR) -> float:
    """The lowest threshold t (flag a file when score >= t) whose FPR on these files is <= target_fpr.

    With n benign files, at most floor(target * n) of them may score at or above t, so t sits just above
    the (k+1)-th highest benign score.  Lower is better for recall; any lower would flag one benign file
    too many.
    """
    y = np.asarray(y, dtype=np.int64)
    score = np.asarray(score, dtype=np.float64)
    benign = np.sort(score[y == 0])[::-1]
    if len(benign) == 0:
        raise ValueError("cannot choose a threshold for a target FPR without benign files")
    allowed = int(np.floor(target_fpr * len(benign) + 1e-9))
    if allowed >= len(benign):
        return float(score.min())
    return float(np.nextafter(benign[allowed], np.inf))


@dataclass(frozen=True)
class ReportThreshold:
    """A deployed model's threshold, chosen on an evaluation's out-of-fold scores of its kind (`runtrace
    calibrate`): every benign file was scored by a model that never saw it, the closest estimate of how
    the model trained on all files scores benign files it has not seen."""

    threshold: float
    target_fpr: float
    source: str  # what the scores were, in words (recorded in the model's calibration.json)


@dataclass(frozen=True)
class PlattScaling:
    """P = sigmoid(slope * logit(score) + intercept), fitted on out-of-fold scores (`runtrace
    calibrate`; applied at scan time by `runtrace.scan.calibration.ProbabilityMap`)."""

    slope: float
    intercept: float
    log_loss_before: float  # of the scores as they are, on the files it was fitted on
    log_loss_after: float  # of the mapped scores, each fold's files mapped by a fit on the other folds


def _platt_fit(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    # No penalty worth the name: two parameters, hundreds of files.
    fitted = LogisticRegression(C=1e6, max_iter=1000).fit(z[:, None], y)
    return float(fitted.coef_[0][0]), float(fitted.intercept_[0])


def platt_scaling(y: np.ndarray, score: np.ndarray, folds: np.ndarray | None = None) -> PlattScaling:
    """Platt scaling of out-of-fold scores (Platt 1999; a logistic regression on the score's logit).

    Why Platt and not isotonic regression: two parameters fit a few hundred files without overfitting,
    and the map stays strictly increasing, so the verdict at a threshold mapped with it is unchanged.
    The log loss after is measured honestly when `folds` is given: each fold's scores mapped by a fit
    on the other folds.  ValueError when the scores do not rank malware above benign files (a map would
    have to decrease)."""
    from sklearn.metrics import log_loss

    y = np.asarray(y, dtype=np.int64)
    if len(np.unique(y)) < 2:
        raise ValueError("Platt scaling needs benign and malicious files")
    z = logit(score)
    slope, intercept = _platt_fit(z, y)
    if slope <= 0:
        raise ValueError(f"the scores do not rank malware above benign files (Platt slope {slope:.3g})")
    mapped = sigmoid(slope * z + intercept)
    if folds is not None and len(np.unique(folds)) > 1:
        for k in np.unique(folds):
            test = folds == k
            if len(np.unique(y[~test])) < 2:
                continue
            a, b = _platt_fit(z[~test], y[~test])
            mapped[test] = sigmoid(a * z[test] + b)
    before = log_loss(y, sigmoid(z), labels=[0, 1])  # the scores as they are, clipped as the map clips them
    return PlattScaling(slope, intercept, float(before), float(log_loss(y, mapped, labels=[0, 1])))


def oof_scores(
    report: Path, representation: str, protocol: str, model: str = "lstm"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, scores, folds) of the file-level out-of-fold predictions of `model` (an evaluation model
    name: "lstm", "transformer") in a report directory's predictions.parquet; ValueError (one line,
    naming the file) when there are none."""
    table, keep = _oof_rows(report, representation, protocol, model)
    y = np.array([table["label"][i] for i in keep], dtype=np.int64)
    score = np.array([table["score"][i] for i in keep], dtype=np.float64)
    folds = table.get("fold")  # absent from hand-made prediction files: one fold
    fold = np.array([folds[i] if folds else 0 for i in keep], dtype=np.int64)
    return y, score, fold


def oof_files(
    report: Path, representation: str, protocol: str, model: str = "lstm"
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(sha256s, labels, scores) of the files `oof_scores` returns, in the same order, from one read."""
    table, keep = _oof_rows(report, representation, protocol, model)
    if "sha256" not in table:
        raise ValueError(f"{Path(report) / 'predictions.parquet'}: no sha256 column")
    y = np.array([table["label"][i] for i in keep], dtype=np.int64)
    score = np.array([table["score"][i] for i in keep], dtype=np.float64)
    return [table["sha256"][i] for i in keep], y, score


def _oof_rows(report: Path, representation: str, protocol: str, model: str) -> tuple[dict, list[int]]:
    import pyarrow.parquet as pq

    path = Path(report) / "predictions.parquet"
    if not path.is_file():
        raise ValueError(f"{path}: no such file (an evaluation report directory holds one)")
    try:
        table = pq.read_table(path).to_pydict()
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read predictions ({e})") from None
    wanted = {"representation": representation, "protocol": protocol, "model": model, "unit": "file"}
    keep = [i for i in range(len(table["score"])) if all(table[k][i] == v for k, v in wanted.items())]
    if not keep:
        raise ValueError(f"{path}: no file-level {model} predictions for {representation} / {protocol}")
    return table, keep


def threshold_from_report(
    report: Path, representation: str, protocol: str, target_fpr: float, model: str = "lstm"
) -> ReportThreshold:
    """The threshold for `target_fpr` on the file-level out-of-fold scores of `model` in a report
    directory (`oof_scores`)."""
    y, score, _ = oof_scores(report, representation, protocol, model)
    threshold = threshold_for_fpr(y, score, target_fpr)
    benign = int((y == 0).sum())
    tpr = float((score[y == 1] >= threshold).mean()) if (y == 1).any() else float("nan")
    source = (
        f"out-of-fold {representation} {model} scores ({protocol}, {benign} benign, {len(y) - benign} "
        f"malicious files) in {Path(report).name}; out-of-fold TPR at this threshold {tpr:.3f}"
    )
    return ReportThreshold(threshold, target_fpr, source)


def strictest_threshold(
    report: Path, representation: str, protocols: list[str], target_fpr: float, model: str = "lstm"
) -> ReportThreshold:
    """The threshold that keeps the FPR at or under `target_fpr` on the out-of-fold scores of every protocol
    in `protocols` (the highest of their thresholds): a deployed model's false-positive rate should not
    depend on which kind of unseen file (another family, another origin) the benign ones are.  With one
    protocol it is `threshold_from_report`."""
    if len(protocols) == 1:
        return threshold_from_report(report, representation, protocols[0], target_fpr, model)
    scored = {p: oof_scores(report, representation, p, model)[:2] for p in protocols}
    threshold = max(threshold_for_fpr(y, score, target_fpr) for y, score in scored.values())
    parts = []
    for p, (y, score) in scored.items():
        benign, malicious = score[y == 0], score[y == 1]
        parts.append(
            f"{p} ({len(benign)} benign, {len(malicious)} malicious files): "
            f"FPR {(benign >= threshold).mean():.3f}, TPR {(malicious >= threshold).mean():.3f}"
        )
    source = (
        f"out-of-fold {representation} {model} scores in {Path(report).name}, the strictest threshold of "
        f"{', '.join(protocols)}; at it, " + "; ".join(parts)
    )
    return ReportThreshold(threshold, target_fpr, source)
