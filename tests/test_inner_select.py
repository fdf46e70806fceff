"""Settings chosen inside a fit, from its training files alone (`inner_select`, `NgramLightGBM
(candidates=...)`): groups stay whole, the better candidate wins, and the model then trained is the one
the winning settings give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from runtrace.models.inner_select import select
from runtrace.models.ngram import NgramLightGBMMonotone
from runtrace.represent.dataset import build_dataset
from runtrace.trace.formats.native import load_trace

DEMO = Path(__file__).resolve().parents[1] / "src" / "runtrace" / "data" / "demo"


def test_the_candidate_that_ranks_held_out_files_better_wins_and_groups_stay_whole() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    groups = np.repeat(np.arange(24), 5)  # five files a group, each group one class
    signal = y + rng.normal(0, 0.3, len(y))
    calls = []

    def fit_predict(candidate: dict, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        calls.append((candidate["name"], set(groups[train]) & set(groups[test])))
        return signal[test] if candidate["name"] == "informed" else rng.random(len(test))

    chosen = select([{"name": "noise"}, {"name": "informed"}], y, groups, fit_predict)
    assert chosen.chosen == {"name": "informed"} and chosen.folds == 3
    assert chosen.scores[1] > chosen.scores[0]
    assert [name for name, _ in calls] == ["noise"] * 3 + ["informed"] * 3
    assert all(shared == set() for _, shared in calls)  # no group on both sides of an inner fold


def test_without_groups_enough_for_folds_the_first_candidate_is_kept_unscored() -> None:
    y = np.array([0, 0, 1, 1])

    def never(*_):
        raise AssertionError("nothing should be fitted")

    one_group = select([{"a": 1}, {"a": 2}], y, np.zeros(4), never)
    assert one_group.chosen == {"a": 1} and one_group.folds == 0 and one_group.scores == [None, None]
    with pytest.raises(ValueError):
        select([], y, np.arange(4), never)


@pytest.fixture(scope="module")
def demo():
    rows = pq.read_table(DEMO / "manifest.parquet").to_pylist()
    traces = [load_trace(DEMO / "traces" / f"{r['sha256']}.rtrace") for r in rows]
    labels = [r["label"] for r in rows]
    return build_dataset(traces, labels, representation="bsm", groups=[r["origin_group"] for r in rows])


def test_the_trees_fitted_after_the_choice_are_those_of_the_chosen_settings(demo) -> None:
    train, held = np.arange(0, len(demo), 2), np.arange(1, len(demo), 2)
    candidates = [{"monotone_constraints_method": "basic"}, {"monotone_constraints_method": "intermediate"}]
    selected = NgramLightGBMMonotone(candidates=candidates).fit(demo, train)
    assert selected.selection_.folds == 3 and selected.selection_.chosen in candidates
    assert all(0.0 <= s <= 1.0 for s in selected.selection_.scores)
    assert (
        selected.params_["monotone_constraints_method"]
        == selected.selection_.chosen["monotone_constraints_method"]
    )
    direct = NgramLightGBMMonotone(params=selected.selection_.chosen).fit(demo, train)
    np.testing.assert_array_equal(selected.predict_proba(demo, held), direct.predict_proba(demo, held))
