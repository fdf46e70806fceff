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


def threshold_from_report(
    report: Path, representation: str, protocol: str, target_fpr: float, model: str = "lstm"
) -> ReportThreshold:
    """The threshold for `target_fpr` on the file-level out-of-fold scores of `model` (an evaluation
    model name: "lstm", "transformer") in a report directory's predictions.parquet; ValueError (one line,
    naming the file) when there are none."""
    import pyarrow.parquet as pq

    path = Path(report) / "predictions.parquet"
    try:
        table = pq.read_table(path).to_pydict()
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read predictions ({e})") from None
    wanted = {"representation": representation, "protocol": protocol, "model": model, "unit": "file"}
    keep = [i for i in range(len(table["score"])) if all(table[k][i] == v for k, v in wanted.items())]
    if not keep:
        raise ValueError(f"{path}: no file-level {model} predictions for {representation} / {protocol}")
    y = np.array([table["label"][i] for i in keep], dtype=np.int64)
    score = np.array([table["score"][i] for i in keep], dtype=np.float64)
    threshold = threshold_for_fpr(y, score, target_fpr)
    benign = int((y == 0).sum())
    tpr = float((score[y == 1] >= threshold).mean()) if (y == 1).any() else float("nan")
    source = (
        f"out-of-fold {representation} {model} scores ({protocol}, {benign} benign, {len(y) - benign} "
        f"malicious files) in {Path(report).name}; out-of-fold TPR at this threshold {tpr:.3f}"
    )
    return ReportThreshold(threshold, target_fpr, source)
