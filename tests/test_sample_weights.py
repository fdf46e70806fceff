"""File weights in training: matching by weighting (`corpus.matching.stratum_weights`), the class balance
kept by mass (`models.weights.mass_balanced`), and the n-gram models fitted with both."""

from __future__ import annotations

import numpy as np
import pytest

from runtrace.corpus.matching import stratum_weights
from runtrace.evaluate.baselines import NgramLogisticRegression
from runtrace.models.ngram import NgramLightGBM
from runtrace.models.weights import mass_balanced
from runtrace.represent.synthetic import synthetic_dataset


def test_each_stratum_weighs_its_classes_equally_and_one_class_strata_nothing() -> None:
    strata = [("a",)] * 4 + [("b",)] * 3 + [("c",)] * 2
    labels = np.array([1, 0, 0, 0, 1, 1, 0, 1, 1])
    w = stratum_weights(strata, labels)
    for key in ("a", "b"):
        inside = np.array([s == (key,) for s in strata])
        assert w[inside & (labels == 1)].sum() == pytest.approx(w[inside & (labels == 0)].sum())
        assert w[inside].sum() == pytest.approx(inside.sum())
    assert list(w[-2:]) == [0.0, 0.0]  # stratum c has malware only
    assert w[0] == pytest.approx(2.0) and w[1] == pytest.approx(4 / 6)


def test_mass_balance_gives_each_class_half_the_file_count() -> None:
    labels = np.array([1, 1, 1, 0])
    w = mass_balanced(labels, np.array([1.0, 3.0, 0.0, 5.0]))
    assert w[labels == 1].sum() == pytest.approx(2.0) and w[labels == 0].sum() == pytest.approx(2.0)
    assert w[1] == pytest.approx(3 * w[0]) and w[2] == 0.0


@pytest.mark.parametrize("model", [NgramLightGBM, NgramLogisticRegression])
def test_uniform_weights_are_the_unweighted_model_and_other_weights_are_honoured(model) -> None:
    data = synthetic_dataset("bsm", 60, seed=5)
    train, test = np.arange(0, 60, 2), np.arange(1, 60, 2)
    plain = model(seed=0).fit(data, train).predict_proba(data, test)
    uniform = model(seed=0).fit(data, train, sample_weight=np.ones(len(train))).predict_proba(data, test)
    np.testing.assert_allclose(uniform, plain, rtol=1e-6, atol=1e-9)
    skewed = np.where(np.arange(len(train)) < len(train) // 3, 1.0, 0.01)
    weighted = model(seed=0).fit(data, train, sample_weight=skewed).predict_proba(data, test)
    assert not np.allclose(weighted, plain)
