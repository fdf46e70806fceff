"""scripts/compare_predictions.py: paired intervals against the first model, and one threshold carried
across protocols."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtrace.evaluate.metrics import roc_auc
from runtrace.evaluate.thresholds import threshold_for_fpr
from script_support import load_script


def _write(path, protocol_scores: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    rows = {"protocol": [], "unit": [], "sha256": [], "fold": [], "label": [], "score": []}
    for protocol, (y, s) in protocol_scores.items():
        n = len(y)
        rows["protocol"] += [protocol] * n
        rows["unit"] += ["file"] * n
        rows["sha256"] += [f"f{i}" for i in range(n)]
        rows["fold"] += [i % 5 for i in range(n)]
        rows["label"] += [int(v) for v in y]
        rows["score"] += [float(v) for v in s]
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), path / "predictions.parquet")


def test_intervals_and_a_threshold_carried_across_protocols(tmp_path) -> None:
    rng = np.random.default_rng(0)
    y = np.array([0] * 200 + [1] * 100)
    weak = {p: (y, rng.random(len(y)) + 0.2 * y) for p in ("by-family", "temporal")}
    strong = {p: (y, rng.random(len(y)) + 1.0 * y) for p in ("by-family", "temporal")}
    _write(tmp_path / "weak", weak)
    _write(tmp_path / "strong", strong)
    out = tmp_path / "c.json"
    load_script("compare_predictions").main(
        ["--model", f"weak={tmp_path}/weak", "--model", f"strong={tmp_path}/strong",
         "--protocols", "by-family,temporal", "--calibrate-on", "by-family", "--resamples", "200",
         "-o", str(out)]
    )  # fmt: skip
    import json

    result = json.loads(out.read_text())
    family = result["protocols"]["by-family"]["models"]
    assert family["weak"]["roc_auc_minus_reference"] == [0.0, 0.0]  # the reference against itself
    assert family["strong"]["roc_auc"] == pytest.approx(roc_auc(y, strong["by-family"][1]))
    assert family["strong"]["roc_auc_minus_reference"][0] > 0  # clearly better on every resample
    threshold = result["threshold"]["strong"]
    assert threshold["raw"] == threshold_for_fpr(y, strong["by-family"][1], 0.01)
    s = strong["temporal"][1]
    assert threshold["at"]["temporal"]["false_positives"] == int(((s >= threshold["raw"]) & (y == 0)).sum())


def test_bad_inputs_are_one_line(tmp_path) -> None:
    script = load_script("compare_predictions")
    with pytest.raises(SystemExit, match="expected NAME=PATH"):
        script.main(["--model", "nameless", "-o", str(tmp_path / "c.json")])
    with pytest.raises(SystemExit, match="no such file"):
        script.main(["--model", f"a={tmp_path}/none", "-o", str(tmp_path / "c.json")])
    _write(tmp_path / "a", {"by-family": (np.array([0, 1]), np.array([0.1, 0.9]))})
    with pytest.raises(SystemExit, match="no file-level scores for temporal"):
        script.main(["--model", f"a={tmp_path}/a", "--protocols", "temporal", "-o", str(tmp_path / "c.json")])
