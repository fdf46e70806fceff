"""docs/results.md is generated from the reports' typed figures (`runtrace results`), not typed in."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from runtrace.cli import app
from runtrace.evaluate.render_results_page import render_results_page
from runtrace.evaluate.result_document import EvaluationResults

runner = CliRunner()


def _metric(v):
    return {"value": v, "low": v - 0.01, "high": v + 0.01}


def _block(metrics):
    counts = {"tp": 1, "fp": 2, "tn": 3, "fn": 4, "n": 10, "n_malicious": 5, "n_benign": 5}
    return {
        "metrics": metrics,
        "counts": counts,
        "bootstrap": {"n_resamples": 10, "confidence": 0.95, "seed": 0},
    }


def _result(rep, protocol, model, acc05, fpr05):
    metrics = {k: _metric(0.5) for k in ["accuracy", "fpr", "roc_auc", "tpr_at_fpr_1pct"]}
    return {
        "dataset": "d", "representation": rep, "protocol": protocol, "model": model,
        "per_file": _block(metrics),
        "per_file_at_0.5": _block({**metrics, "accuracy": _metric(acc05), "fpr": _metric(fpr05)}),
    }  # fmt: skip


def _metrics_json() -> dict:
    return {
        "run": "x", "command": "runtrace evaluate ...", "date": "2026-11-29 06:00:00",
        "machine": {"platform": "Linux", "cpu_count": 2, "python": "3.11.7"},
        "config": {"folds": 5, "seed": 0, "target_fpr": 0.01, "threshold_fit": "auto"},
        "bootstrap": {"n_resamples": 10, "confidence": 0.95, "seed": 0},
        "datasets": [{"name": "d", "representation": "bsm", "files": 10, "lexicon": 7, "malicious": 5,
                      "benign": 5, "fingerprint": "ab" * 8, "manifest_sha256": "cd" * 8}],
        "results": [_result("bsm", "by-file", "lstm", 0.893, 0.269),
                    _result("bsm", "leaky", "lstm", 0.97, 0.092),
                    _result("bsm", "by-file", "ngram-lr", 0.9, 0.1)],
    }  # fmt: skip


def test_render_puts_our_figures_beside_the_papers():
    report = EvaluationResults.model_validate(_metrics_json())
    text = render_results_page([(Path("reports/x"), report)], notes="## Findings\n\nplain words")
    assert "| BSM LSTM | 99.26 % / 2.62 % | 89.3 % / 26.9 % | 97.0 % / 9.2 % |" in text
    assert "## Findings" in text
    assert "| BSM | by-file | ngram-lr |" in text
    assert "cdcdcdcdcdcdcdcd" in text and "Linux, 2 CPUs, Python 3.11.7" in text


def test_a_split_two_reports_share_is_described_once():
    def temporal_report(model):
        doc = _metrics_json()
        doc["results"] = [_result("bsm", "temporal", model, 0.6, 0.1)]
        by_year = [{"side": "train", "files": 7}, {"side": "test", "files": 3}]
        info = {"cut": "2019-12-01", "rule": "chosen", "by_year": by_year}
        run = {"dataset": "d", "representation": "bsm", "protocol": "temporal", "unit": "file", "n_folds": 1}
        doc["protocol_runs"] = [{**run, "info": info}]
        return EvaluationResults.model_validate(doc)

    reports = [(Path("lstm"), temporal_report("lstm")), (Path("lr"), temporal_report("ngram-lr"))]
    text = render_results_page(reports, notes="")
    line = "BSM temporal: cut at 2019-12-01 (chosen); 7 files before it trained, 3 after it tested."
    assert text.count(line) == 1


def test_metrics_json_round_trips_with_its_layout(tmp_path):
    report = EvaluationResults.model_validate(_metrics_json())
    path = report.write(tmp_path / "metrics.json")
    raw = json.loads(path.read_text())
    assert raw["results"][0]["per_file_at_0.5"]["metrics"]["accuracy"]["value"] == 0.893
    assert EvaluationResults.read(tmp_path) == report


def test_results_command_writes_the_page_and_names_bad_reports(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    (good / "metrics.json").write_text(json.dumps(_metrics_json()))
    out = tmp_path / "results.md"
    result = runner.invoke(app, ["results", str(good), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "| BSM | by-file | lstm |" in out.read_text()

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text('{"results": "no"}')
    result = runner.invoke(app, ["results", str(good), str(bad), "-o", str(out)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0] and "bad/metrics.json" in lines[0], result.output
