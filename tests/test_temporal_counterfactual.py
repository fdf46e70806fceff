"""scripts/temporal_counterfactual.py: it moves only test-side benign files of the chosen compiler, by
origin group, into training, and scores both models on the same remaining test files."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from runtrace.represent.synthetic import synthetic_dataset
from script_support import load_script


def _dated(n: int = 120):
    data = synthetic_dataset("bsm", n, seed=4)
    y = np.asarray(data.labels())
    rng = np.random.default_rng(0)
    compiler = np.where((y == 0) & (np.arange(n) % 3 == 0), "mingw-gcc", "msvc").astype(object)
    dates = []
    for i in range(n):
        if y[i] == 1:
            year = int(rng.integers(2010, 2024))
        else:  # the MinGW-built benign files only after 2022, the others throughout
            year = (
                int(rng.integers(2023, 2026)) if compiler[i] == "mingw-gcc" else int(rng.integers(2010, 2026))
            )
        dates.append(dt.date(year, 6, 1))
    data.files = data.files.append_column("first_seen", pa.array(dates, pa.date32()))
    groups = np.array([f"g{i // 2}" for i in range(n)], dtype=object)  # two files per origin group
    return data, compiler, groups


def test_moves_half_the_groups_of_test_side_benign_files_of_one_compiler() -> None:
    script = load_script("temporal_counterfactual")
    data, compiler, groups = _dated()
    lines: list[str] = []
    result = script.run(data, compiler, groups, "mingw-gcc", draws=2, log=lines.append)

    from runtrace.evaluate import protocols

    fold = protocols.temporal(data).folds[0]
    candidates = [i for i in fold.test if compiler[i] == "mingw-gcc" and data.labels()[i] == 0]
    assert candidates  # the fixture puts MinGW benign files after the cut
    for draw in result["draws"]:
        assert draw["moved_groups"] == len({groups[i] for i in candidates}) // 2
        assert 0 < draw["moved_files"] <= len(candidates)
        assert draw["test_files"] == len(fold.test) - draw["moved_files"]
        for side in ("original", "with_moved"):
            assert draw[side]["all"]["files"] == draw["test_files"]
            assert 0 <= draw[side]["all"]["roc_auc"] <= 1
    assert len(lines) == 2 and all("ROC-AUC on the rest" in line for line in lines)
    assert set(result["familiarity"]) == {"benign", "malicious"}
    assert all(0 <= v <= 1 for v in result["familiarity"].values())


def test_the_monotone_trees_can_take_the_counterfactual(monkeypatch) -> None:
    script = load_script("temporal_counterfactual")
    data, compiler, groups = _dated()
    fitted: list[str] = []

    class Recorded(script.NGRAM_CLASSES["ngram-lgbm-monotone"]):
        def fit(self, *args, **kwargs):
            fitted.append(self.kind)
            return super().fit(*args, **kwargs)

    plain = script.run(data, compiler, groups, "mingw-gcc", draws=1, log=lambda _: None)
    monkeypatch.setitem(script.NGRAM_CLASSES, "ngram-lgbm-monotone", Recorded)
    monotone = script.run(data, compiler, groups, "mingw-gcc", draws=1, log=lambda _: None,
                          kind="ngram-lgbm-monotone")  # fmt: skip
    assert fitted == ["ngram-lgbm-monotone"] * 2  # the original side and the grown one
    # The same draw (files moved, files tested), scored by the other model.
    for key in ("moved_files", "moved_groups", "test_files"):
        assert plain["draws"][0][key] == monotone["draws"][0][key]


def test_a_compiler_without_test_side_groups_is_refused() -> None:
    script = load_script("temporal_counterfactual")
    data, compiler, groups = _dated()
    with pytest.raises(ValueError, match="fewer than 2 origin groups of benign go files"):
        script.run(data, compiler, groups, "go", draws=1, log=lambda _: None)
