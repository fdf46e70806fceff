"""Choosing the decision threshold from training scores only.

A threshold picked on the test fold is data snooping: it makes the reported FPR hit its target by
construction.  runtrace picks it on out-of-fold scores of the *training* fold (or of a held-out part of
it) for a target false-positive rate, and applies it unchanged to the test fold, where the FPR it really
gives is then measured.
"""

from __future__ import annotations

import numpy as np

DEFAULT_TARGET_FPR = 0.01
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
