"""docs/results.md is generated from the reports' figures, not typed in."""

from runtrace.evaluate.results import render


def _metric(v):
    return {"value": v, "low": v - 0.01, "high": v + 0.01}


def _result(rep, protocol, model, acc05, fpr05):
    keys = ["accuracy", "fpr", "roc_auc", "tpr_at_fpr_1pct"]
    metrics = {k: _metric(0.5) for k in keys}
    return {
        "representation": rep, "protocol": protocol, "model": model,
        "per_file": {"metrics": metrics, "counts": {"tp": 1, "fp": 2, "tn": 3, "fn": 4, "n": 10}},
        "per_file_at_0.5": {"metrics": {**metrics, "accuracy": _metric(acc05), "fpr": _metric(fpr05)}},
    }  # fmt: skip


def test_render_puts_our_figures_beside_the_papers():
    metrics = {
        "command": "runtrace evaluate ...", "date": "2026-11-29", "machine": {"cpus": 2},
        "datasets": [{"name": "d", "representation": "bsm", "files": 10, "malicious": 5, "benign": 5,
                      "fingerprint": "ab" * 8, "manifest_sha256": "cd" * 8}],
        "results": [_result("bsm", "by-file", "lstm", 0.893, 0.269),
                    _result("bsm", "leaky", "lstm", 0.97, 0.092),
                    _result("bsm", "by-file", "ngram-lr", 0.9, 0.1)],
    }  # fmt: skip
    text = render([("reports/x", metrics)], notes="## Findings\n\nplain words")
    assert "| BSM LSTM | 99.26 % / 2.62 % | 89.3 % / 26.9 % | 97.0 % / 9.2 % |" in text
    assert "## Findings" in text
    assert "| BSM | by-file | ngram-lr |" in text
    assert "cdcdcdcdcdcdcdcd" in text
