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
