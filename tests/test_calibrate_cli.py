"""`runtrace calibrate` takes the threshold from out-of-fold benign scores, and a probability map (Platt
scaling) from the same scores."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from runtrace.cli.app import app
from runtrace.evaluate.activity import recall_by_api_calls
from runtrace.evaluate.thresholds import platt_scaling, threshold_for_fpr
from runtrace.represent.dataset import build_dataset
from runtrace.scan.calibration import read_calibration

DEMO = Path(__file__).resolve().parents[1] / "src" / "runtrace" / "data" / "demo"


def _report_and_model(tmp_path, rows: dict):
    """An evaluation report directory holding `rows` as its predictions, and an empty model directory."""
    report = tmp_path / "report"
    report.mkdir()
    pq.write_table(pa.table(rows), report / "predictions.parquet")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return report, model


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
    report, model = _report_and_model(tmp_path, rows)
    result = CliRunner().invoke(
        app, ["calibrate", str(model), "--report", str(report), "--target-fpr", "0.01"]
    )
    assert result.exit_code == 0, result.output
    calibration = read_calibration(model)
    raw = threshold_for_fpr(y, score, 0.01)
    # The threshold is on the mapped scale, and flags exactly the files the raw threshold flags.
    mapped = calibration.probability_map
    assert mapped is not None and calibration.threshold == mapped(raw)
    assert np.array_equal(mapped(score) >= calibration.threshold, score >= raw)
    assert calibration.target_fpr == 0.01
    assert (score[y == 0] >= raw).sum() <= 2  # 1 % of 200 benign
    assert json.loads((model / "calibration.json").read_text())["version"] == 2
    assert "log loss" in result.output

    # Without the map: the raw threshold, in the version-1 file older readers understand.
    result = CliRunner().invoke(
        app, ["calibrate", str(model), "--report", str(report), "--target-fpr", "0.01", "--no-platt"]
    )
    assert result.exit_code == 0, result.output
    cal = json.loads((model / "calibration.json").read_text())
    assert cal["threshold"] == raw and cal["version"] == 1 and "probability" not in cal


def test_platt_scaling_tames_overconfident_scores_measured_out_of_fold():
    # Scores of an overconfident model: right more often than not, but always near 0 or 1.
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 600)
    right = rng.uniform(0, 1, len(y)) < 0.8
    confident = np.where(right == (y == 1), 1 - 1e-5, 1e-5) * rng.uniform(0.999, 1, len(y))
    fitted = platt_scaling(y, confident, folds=np.arange(len(y)) % 5)
    assert 0 < fitted.slope < 1  # squeezes the logits
    assert fitted.log_loss_after < 0.6 < fitted.log_loss_before


def test_scores_that_rank_benign_files_higher_get_no_map(tmp_path):
    y = np.array([0] * 50 + [1] * 50)
    with pytest.raises(ValueError, match="do not rank malware above"):
        platt_scaling(y, np.where(y == 1, 0.2, 0.8))


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
    cal = read_calibration(model)
    assert cal.threshold == cal.probability_map(threshold_for_fpr(y, transformer, 0.01))
    assert "transformer scores" in cal.source


def test_the_threshold_can_hold_the_target_on_several_protocols(tmp_path):
    """`--also-protocol`: the threshold is the highest any of the protocols needs for the target FPR, so
    the FPR is at or under it on each; the probability map stays the first protocol's."""
    rng = np.random.default_rng(1)
    y = np.array([0] * 200 + [1] * 60)
    family = np.where(y == 1, rng.uniform(0.4, 1, len(y)), rng.uniform(0, 0.8, len(y)))
    origin = np.where(
        y == 1, rng.uniform(0.4, 1, len(y)), rng.uniform(0, 0.95, len(y))
    )  # harder benign files
    n = len(y)
    rows = {"representation": ["bsm"] * 2 * n, "protocol": ["by-family"] * n + ["by-origin"] * n,
            "model": ["lstm"] * 2 * n, "unit": ["file"] * 2 * n, "label": [*y, *y],
            "score": [*family, *origin]}  # fmt: skip
    report, model = _report_and_model(tmp_path, rows)
    args = ["calibrate", str(model), "--report", str(report), "--protocol", "by-family", "--no-platt"]
    result = CliRunner().invoke(app, [*args, "--also-protocol", "by-origin"])
    assert result.exit_code == 0, result.output
    both = read_calibration(model).threshold
    assert both == max(threshold_for_fpr(y, family, 0.01), threshold_for_fpr(y, origin, 0.01))
    assert both > threshold_for_fpr(y, family, 0.01)  # the harder protocol decides here
    for score in (family, origin):
        assert (score[y == 0] >= both).mean() <= 0.01
    source = json.loads((model / "calibration.json").read_text())["source"]
    assert "strictest threshold of by-family, by-origin" in source and "by-origin (200 benign" in source

    result = CliRunner().invoke(app, [*args, "--also-protocol", "temporal"])
    assert result.exit_code == 2 and "no file-level lstm predictions for bsm / temporal" in result.output


def test_a_report_without_predictions_is_one_line(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    result = CliRunner().invoke(app, ["calibrate", str(model), "--report", str(tmp_path / "none")])
    assert result.exit_code == 2 and "predictions.parquet: no such file" in result.output
    assert result.output.count("none/predictions.parquet") == 1 and "Traceback" not in result.output


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory):
    """The demo traces as a BSM dataset (real traces; derived data, no malware)."""
    manifest = pq.read_table(DEMO / "manifest.parquet").to_pylist()
    chosen = [r for r in manifest if r["label"] == "malicious"][:12] + [
        r for r in manifest if r["label"] == "benign"
    ][:12]
    traces = [DEMO / "traces" / f"{r['sha256']}.rtrace" for r in chosen]
    labels = [r["label"] for r in chosen]
    out = tmp_path_factory.mktemp("activity") / "dataset"
    build_dataset(traces, labels, representation="bsm", out=out)
    return out


def test_calibrate_records_the_table_from_the_dataset(tmp_path, demo_dataset):
    files = pq.read_table(demo_dataset / "files.parquet").to_pylist()
    rng = np.random.default_rng(0)
    score = rng.uniform(0, 1, len(files))
    n = len(files)
    rows = {"representation": ["bsm"] * n, "protocol": ["by-family"] * n, "model": ["lstm"] * n,
            "unit": ["file"] * n, "sha256": [f["sha256"] for f in files],
            "label": [f["label"] for f in files], "score": score.tolist()}  # fmt: skip
    report, model = _report_and_model(tmp_path, rows)
    args = ["calibrate", str(model), "--report", str(report), "--protocol", "by-family", "--no-platt"]
    result = CliRunner().invoke(app, [*args, "--dataset", str(demo_dataset)])
    assert result.exit_code == 0, result.output
    calibration = read_calibration(model)
    labels = np.array(rows["label"])
    expected = recall_by_api_calls(labels, score, [f["n_api_calls"] for f in files], calibration.threshold)
    assert [b.__dict__ for b in calibration.recall_by_api_calls.bins] == expected
    assert "flagged at it, by API calls" in result.output

    # A dataset that lacks the report's files is one line.
    rows["sha256"][0] = "0" * 64
    pq.write_table(pa.table(rows), report / "predictions.parquet")
    result = CliRunner().invoke(app, [*args, "--dataset", str(demo_dataset)])
    assert result.exit_code == 2 and "1 of the by-family files scored in" in result.output
    assert "Traceback" not in result.output
