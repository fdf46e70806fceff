import numpy as np
import pytest

from runtrace.evaluate.metrics import (
    confusion_counts,
    file_metrics,
    point_metrics,
    resampled_metrics,
    roc_auc,
    stratified_bootstrap_indices,
    tpr_at_fpr,
)
from runtrace.evaluate.thresholds import threshold_for_fpr

# Six malicious, four benign files; one benign file (0.5) scores above two malicious ones (0.4, 0.2).
Y = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
SCORE = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.2, 0.5, 0.3, 0.1, 0.05])
PRED = SCORE >= 0.45  # flags 0.9, 0.8, 0.7, 0.6 and the benign 0.5


def test_metrics_match_hand_computed_values():
    c = confusion_counts(Y, PRED)
    assert (c.tp, c.fp, c.tn, c.fn, c.n) == (4, 1, 3, 2, 10)
    m = point_metrics(Y, SCORE, PRED)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["tpr"] == pytest.approx(4 / 6)
    assert m["fpr"] == pytest.approx(1 / 4)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(8 / 11)  # 2 * 4 / (2 * 4 + 1 + 2)
    assert m["balanced_accuracy"] == pytest.approx(17 / 24)  # (4/6 + 3/4) / 2
    # Pairs (malicious, benign) ranked correctly: 4+4+4+4 for 0.9..0.6, 3 for 0.4, 2 for 0.2 -> 21 of 24.
    assert m["roc_auc"] == pytest.approx(21 / 24)
    # No benign file may be flagged at FPR <= 1 % (or 0.1 %): only scores above 0.5 count, 4 of 6.
    assert m["tpr_at_fpr_1pct"] == pytest.approx(4 / 6)
    assert m["tpr_at_fpr_0.1pct"] == pytest.approx(4 / 6)
    # Allowing one benign file (FPR 25 %, the 0.5) reaches down to 0.4, above the next benign 0.3: 5 of 6.
    assert tpr_at_fpr(Y, SCORE, 0.25) == pytest.approx(5 / 6)
    # Allowing two (0.5 and 0.3) reaches 0.2, above the next benign 0.1: all six.
    assert tpr_at_fpr(Y, SCORE, 0.5) == pytest.approx(1.0)


def test_ties_get_half_credit_in_auc_and_none_in_tpr_at_fpr():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.7, 0.7, 0.9, 0.1])
    # Pairs: (0.9 vs 0.7) 1, (0.9 vs 0.1) 1, (0.7 vs 0.7) 1/2, (0.7 vs 0.1) 1 -> 3.5 / 4.
    assert roc_auc(y, s) == pytest.approx(3.5 / 4)
    # The tie at 0.7 cannot be split: at FPR 0 only the 0.9 file is caught.
    assert tpr_at_fpr(y, s, 0.01) == pytest.approx(0.5)


def test_undefined_metrics_are_nan_not_zero():
    m = point_metrics(np.array([1, 1]), np.array([0.2, 0.3]), np.array([False, False]))
    assert np.isnan(m["fpr"]) and np.isnan(m["precision"]) and np.isnan(m["roc_auc"])
    assert m["tpr"] == 0.0


def test_bootstrap_intervals_contain_point_and_keep_class_counts():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(80, int), np.zeros(60, int)]
    score = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    pred = score >= 0.5
    report = file_metrics(y, score, pred, n_resamples=300, seed=7)
    for name, est in report.metrics.items():
        if est.value is None:
            continue
        assert est.low <= est.value <= est.high, name
        assert est.low < est.high or name.startswith("tpr_at_fpr"), name
    assert report.counts.n == 140 and report.counts.n_malicious == 80
    idx = stratified_bootstrap_indices(y, 50, seed=3)
    assert idx.shape == (50, 140)
    assert np.all(y[idx].sum(axis=1) == 80)
    # Same seed, same intervals: figures in a report can be reproduced.
    again = file_metrics(y, score, pred, n_resamples=300, seed=7)
    assert again["roc_auc"] == report["roc_auc"]


def test_resolution_limit_flagged_with_few_benign_files():
    report = file_metrics(Y, SCORE, PRED, n_resamples=20)
    assert report.resolution_limited == {"tpr_at_fpr_1pct": True, "tpr_at_fpr_0.1pct": True}


def test_threshold_for_fpr_allows_exactly_the_target_false_positives():
    y = np.r_[np.zeros(200, int), np.ones(5, int)]
    score = np.r_[np.linspace(0.0, 0.99, 200), np.full(5, 0.995)]
    t = threshold_for_fpr(y, score, 0.01)  # 2 of 200 benign may be flagged
    assert np.sum((y == 0) & (score >= t)) == 2
    assert np.sum((y == 0) & (score >= np.nextafter(score[197], -np.inf))) == 3  # any lower flags a third
    assert threshold_for_fpr(y, score, 0.0) > score[:200].max()


def test_vectorised_resamples_equal_the_plain_computation():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 60)
    score = np.round(rng.random(60), 1)  # many ties, the hard case for ROC figures
    pred = score >= 0.5
    idx = stratified_bootstrap_indices(y, 40, seed=2)
    fast = resampled_metrics(y, score, pred, idx, chunk=7)
    for r, rows in enumerate(idx):
        slow = point_metrics(y[rows], score[rows], pred[rows])
        for name, value in slow.items():
            assert fast[name][r] == pytest.approx(value, nan_ok=True), name
