"""Choosing a model's settings from its training files alone: grouped cross-validation inside the fit.

A setting picked because it scored best on an evaluation's test folds has been tuned on them, and its
figures flatter it. `select` picks among candidate settings the way an outer protocol would judge them,
but inside one fit: it splits the training files into folds that keep each group (malware family,
benign origin) whole, fits every candidate on the other folds, pools its held-out scores, and keeps the
candidate with the highest standardised partial ROC-AUC up to `max_fpr`, the low false-positive region
where the scanner's threshold sits (smoother than the TPR at one FPR, which rests on a handful of
benign files). The caller then fits the winner on every training file. Run inside each outer fold, this
is nested cross-validation: the outer test files never take part in the choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

INNER_FOLDS = 3
MAX_FPR = 0.01


@dataclass(frozen=True)
class Selection:
    chosen: dict  # the winning candidate
    scores: list[float | None]  # each candidate's pooled inner score (None: could not be scored)
    folds: int  # inner folds used (0: too few groups or a one-class fold; the first candidate is kept)


def select(
    candidates: Sequence[dict],
    y: np.ndarray,
    groups: np.ndarray,
    fit_predict: Callable[[dict, np.ndarray, np.ndarray], np.ndarray],
    *,
    weight: np.ndarray | None = None,
    folds: int = INNER_FOLDS,
    max_fpr: float = MAX_FPR,
) -> Selection:
    """The candidate whose pooled held-out scores have the best partial ROC-AUC.

    fit_predict(candidate, train_rows, test_rows) -> scores of test_rows: fits on the rows given (indices
    into y) and scores the others.  weight: per-file weights for the partial AUC (those the model trains
    with, so files it ignores count for nothing here either)."""
    from sklearn.metrics import roc_auc_score

    if not candidates:
        raise ValueError("no candidate settings to choose from")
    y, groups = np.asarray(y), np.asarray(groups)
    splits = _splits(y, groups, folds)
    if len(candidates) == 1 or not splits:
        return Selection(dict(candidates[0]), [None] * len(candidates), 0)
    scores: list[float | None] = []
    for candidate in candidates:
        pooled = np.empty(len(y))
        for train_rows, test_rows in splits:
            pooled[test_rows] = fit_predict(candidate, train_rows, test_rows)
        scores.append(float(roc_auc_score(y, pooled, max_fpr=max_fpr, sample_weight=weight)))
    best = int(np.argmax(scores))  # the first of equals: candidates are listed in order of preference
    return Selection(dict(candidates[best]), scores, len(splits))


def _splits(y: np.ndarray, groups: np.ndarray, folds: int) -> list:
    """Grouped folds, each training part holding both classes; none where the groups cannot give them."""
    from sklearn.model_selection import GroupKFold

    k = min(folds, len(np.unique(groups)))
    if k < 2 or len(np.unique(y)) < 2:
        return []
    splits = list(GroupKFold(n_splits=k).split(np.zeros(len(y)), y, groups))
    return splits if all(len(np.unique(y[train])) == 2 for train, _ in splits) else []
