"""scripts/training_data_arms.py: the arms share the folds and the test files (the matched ones), and
differ only in the training files and their weights."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from runtrace.represent.synthetic import synthetic_dataset
from script_support import load_script


def _script():
    return load_script("training_data_arms")


def test_the_arms_score_the_same_matched_test_files_and_differ_in_training() -> None:
    data = synthetic_dataset("bsm", 80, seed=3)
    labels = np.asarray(data.labels())
    family = [f"fam{i % 8}" if label == 1 else None for i, label in enumerate(labels)]
    data.files = data.files.append_column("family", pa.array(family, pa.string()))
    shas = data.sha256s()
    matched = set(shas[::2])
    # Two strata with both classes, and one (every fifth malicious file) with malware only.
    strata = [("lonely",) if label == 1 and i % 5 == 0 else (f"s{i % 2}",) for i, label in enumerate(labels)]
    lines: list[str] = []
    script = _script()
    scored = script.run(data, matched, strata, "by-family", log=lines.append)

    for arm in script.ARMS:
        assert {r["sha256"] for r in scored[arm]} <= matched
    key = [(r["sha256"], r["fold"]) for r in scored["matched"]]
    for arm in script.ARMS:
        assert key == [(r["sha256"], r["fold"]) for r in scored[arm]]
    assert len({s for s, _ in key}) == len(key)  # every matched file tested once
    trained = {line.split(":")[0]: int(line.split("trained on ")[1].split()[0]) for line in lines}
    for fold in range(5):
        assert trained[f"fold {fold} all"] > trained[f"fold {fold} matched"]
        # the weighted arm leaves out exactly the training files of the malware-only stratum
        assert trained[f"fold {fold} all"] > trained[f"fold {fold} weighted"] > 0
    lonely = sum(1 for s in strata if s == ("lonely",))
    assert sum(trained[f"fold {f} all"] - trained[f"fold {f} weighted"] for f in range(5)) == 4 * lonely
    summary = script.summary(scored)
    assert set(summary) == {"matched", "all", "weighted"} and 0 <= summary["weighted"]["roc_auc"] <= 1
    # One arm alone: the same scores as when it ran beside the others.
    alone = script.run(data, matched, strata, "by-family", log=lambda _: None, arms=("weighted",))
    assert set(alone) == {"weighted"} and alone["weighted"] == scored["weighted"]


def test_an_unknown_arm_is_a_one_line_error(tmp_path) -> None:
    import pytest

    with pytest.raises(SystemExit, match="--arms: choose from matched, all, weighted"):
        _script().main(["a", "b", "c", "-o", str(tmp_path / "x.json"), "--arms", "weighted,best"])


def test_each_arms_scores_are_a_predictions_file_calibrate_reads(tmp_path) -> None:
    from runtrace.evaluate.thresholds import oof_scores

    def rows(high: float, low: float) -> list[dict]:
        return [
            {"sha256": "a", "label": 1, "score": high, "fold": 0},
            {"sha256": "b", "label": 0, "score": low, "fold": 1},
        ]

    scored = {"matched": rows(0.9, 0.2), "weighted": rows(0.7, 0.4)}
    written = _script().write_predictions(scored, "by-family", "bsm", tmp_path)
    assert written == [
        tmp_path / "matched" / "predictions.parquet",
        tmp_path / "weighted" / "predictions.parquet",
    ]
    y, score, fold = oof_scores(tmp_path / "weighted", "bsm", "by-family", model="ngram-lgbm")
    assert list(y) == [1, 0] and list(score) == [0.7, 0.4] and list(fold) == [0, 1]
    # With the monotone trees, the scores are that model's, where calibrating a monotone model looks.
    _script().write_predictions(scored, "by-family", "bsm", tmp_path / "m", kind="ngram-lgbm-monotone")
    y, score, _ = oof_scores(tmp_path / "m" / "weighted", "bsm", "by-family", model="ngram-lgbm-monotone")
    assert list(score) == [0.7, 0.4]
    # Another protocol's run into the same directory adds its rows; running a protocol again replaces its own.
    _script().write_predictions(scored, "by-origin", "bsm", tmp_path / "m", kind="ngram-lgbm-monotone")
    _script().write_predictions(scored, "by-origin", "bsm", tmp_path / "m", kind="ngram-lgbm-monotone")
    for protocol in ("by-family", "by-origin"):
        y, score, _ = oof_scores(tmp_path / "m" / "weighted", "bsm", protocol, model="ngram-lgbm-monotone")
        assert list(score) == [0.7, 0.4]


def test_candidates_are_chosen_among_on_each_folds_training_files() -> None:
    data = synthetic_dataset("bsm", 80, seed=3)
    labels = np.asarray(data.labels())
    family = [f"fam{i % 8}" if label == 1 else None for i, label in enumerate(labels)]
    data.files = data.files.append_column("family", pa.array(family, pa.string()))
    strata = [(f"s{i % 2}",) for i in range(len(labels))]
    candidates = [{"num_leaves": 4}, {"num_leaves": 15}]
    lines: list[str] = []
    script = _script()
    script.run(data, set(data.sha256s()), strata, "by-family", log=lines.append, arms=("weighted",),
               options={"candidates": candidates})  # fmt: skip
    chose = [line for line in lines if " chose " in line]
    assert [line.split(":")[0] for line in chose] == [f"fold {f} weighted" for f in range(5)]
    assert all("{'num_leaves': 4}" in line or "{'num_leaves': 15}" in line for line in chose)
