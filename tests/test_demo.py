"""`runtrace demo` (what `make demo` runs) works from a source checkout: a smoke test of the whole path."""

import json

import pytest
from typer.testing import CliRunner

from runtrace.cli.app import app


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    result = CliRunner().invoke(app, ["demo", "-o", str(tmp_path), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "beside the paper" in result.output
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert {(r["representation"], r["model"]) for r in metrics["results"]} == {
        ("ism", "lstm"), ("ism", "ngram-lr"), ("bsm", "lstm"), ("bsm", "ngram-lr"),
    }  # fmt: skip
    assert len(list((tmp_path / "traces").glob("*.rtrace"))) == 2
