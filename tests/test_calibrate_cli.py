"""`runtrace calibrate` takes the threshold from out-of-fold benign scores."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from runtrace.cli.app import app
from runtrace.evaluate.thresholds import threshold_for_fpr


def test_threshold_from_out_of_fold_scores(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array([0] * 200 + [1] * 50)
    score = np.where(y == 1, rng.uniform(0.5, 1, len(y)), rng.uniform(0, 0.7, len(y)))
    n = len(y)
    rows = {"representation": ["bsm"] * n, "protocol": ["by-file"] * n, "model": ["lstm"] * n,
            "unit": ["file"] * n, "label": y.tolist(), "score": score.tolist()}  # fmt: skip
    # Rows of another model must not count.
    for k, v in {"representation": "bsm", "protocol": "by-file", "model": "ngram-lr", "unit": "file"}.items():
        rows[k].append(v)
    rows["label"].append(0)
    rows["score"].append(0.99)
    report = tmp_path / "report"
    report.mkdir()
    pq.write_table(pa.table(rows), report / "predictions.parquet")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    result = CliRunner().invoke(
        app, ["calibrate", str(model), "--report", str(report), "--target-fpr", "0.01"]
    )
    assert result.exit_code == 0, result.output
    cal = json.loads((model / "calibration.json").read_text())
    assert cal["threshold"] == threshold_for_fpr(y, score, 0.01)
    assert cal["target_fpr"] == 0.01
    assert (score[y == 0] >= cal["threshold"]).sum() <= 2  # 1 % of 200 benign


def test_missing_model_directory_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["calibrate", str(tmp_path / "nope"), "--report", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a model directory" in result.output


def test_a_transformer_is_calibrated_on_the_transformers_scores(tmp_path):
    rng = np.random.default_rng(1)
    y = np.array([0] * 100 + [1] * 20)
    lstm = rng.uniform(0, 1, len(y))
    transformer = np.where(y == 1, rng.uniform(0.6, 1, len(y)), rng.uniform(0, 0.8, len(y)))
    n = len(y)
    rows = {"representation": ["bsm"] * 2 * n, "protocol": ["by-file"] * 2 * n,
            "model": ["lstm"] * n + ["transformer"] * n, "unit": ["file"] * 2 * n,
            "label": [*y.tolist(), *y.tolist()],
            "score": [*lstm.tolist(), *transformer.tolist()]}  # fmt: skip
    report = tmp_path / "report"
    report.mkdir()
    pq.write_table(pa.table(rows), report / "predictions.parquet")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"kind": "bsm-transformer"}))
    result = CliRunner().invoke(app, ["calibrate", str(model), "--report", str(report)])
    assert result.exit_code == 0, result.output
    cal = json.loads((model / "calibration.json").read_text())
    assert cal["threshold"] == threshold_for_fpr(y, transformer, 0.01)
    assert "transformer scores" in cal["source"]
