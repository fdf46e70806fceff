"""Moving traces between formats without losing what an analyst needs: the text format keeps the sample's
sha256 and the API calls with their arguments; a format that cannot hold API calls says so; `trace
--format x64dbg` writes the exports a folder traced without them lacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtrace.cli.app import app
from runtrace.trace.formats.registry import load_any, save_as


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> Path:
    """cli-32.exe traced by the emulator: API calls with arguments and results."""
    out = tmp_path_factory.mktemp("traced")
    fixture = Path(__file__).parent / "fixtures" / "benign" / "cli-32.exe"
    result = CliRunner().invoke(app, ["trace", str(fixture), "-o", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    return next(out.glob("*.rtrace"))


def _calls(trace) -> list[tuple]:
    return [(c.position, c.name, c.args, c.result, c.return_address, c.supported) for c in trace.api_calls]


def test_the_text_format_keeps_the_sha256_and_every_api_call(traced: Path, tmp_path: Path) -> None:
    trace = load_any(traced)
    assert any(c.args for c in trace.api_calls) and any(
        isinstance(a, str) for c in trace.api_calls for a in c.args
    )
    text = save_as(trace, tmp_path / "run.txt", "text")
    lines = text.read_text().splitlines()
    assert lines[1] == f"; sha256 {trace.meta.sha256}"
    assert sum(line.lstrip().startswith("; api ") for line in lines) == len(trace.api_calls)
    again = load_any(text)
    assert again.meta.sha256 == trace.meta.sha256
    assert again.instruction_count == trace.instruction_count and again.visit_count == trace.visit_count
    assert _calls(again) == _calls(trace)


def test_show_prints_the_lines_the_text_format_writes(traced: Path, tmp_path: Path) -> None:
    shown = CliRunner().invoke(app, ["show", str(traced)]).stdout.splitlines()
    written = save_as(load_any(traced), tmp_path / "run.txt", "text").read_text().splitlines()
    api = [line for line in shown if line.lstrip().startswith("; api ")]
    assert api and api == [line for line in written if line.lstrip().startswith("; api ")]


def test_converting_to_x64dbg_says_the_api_calls_are_left_out(traced: Path, tmp_path: Path) -> None:
    n = len(load_any(traced).api_calls)
    result = CliRunner().invoke(app, ["convert", str(traced), str(tmp_path / "run.trace32")])
    assert result.exit_code == 0, result.output
    assert (
        f"note: x64dbg files hold no API calls: the trace's {n:,} calls are not written (the native and text "
        "formats keep them)" in " ".join(result.stdout.split())
    )
    assert load_any(tmp_path / "run.trace32").api_calls == []
    result = CliRunner().invoke(app, ["convert", str(traced), str(tmp_path / "run.txt")])
    assert result.exit_code == 0 and "note:" not in result.stdout


def test_trace_format_x64dbg_writes_the_exports_an_earlier_run_did_not(tmp_path: Path, cli32: Path) -> None:
    out = tmp_path / "out"
    first = CliRunner().invoke(app, ["trace", str(cli32), "-o", str(out), "--workers", "1"])
    assert first.exit_code == 0 and not list(out.glob("*.trace32"))
    rtrace = next(out.glob("*.rtrace"))
    traced_at = rtrace.stat().st_mtime_ns
    again = CliRunner().invoke(app, ["trace", str(cli32), "-o", str(out), "--format", "x64dbg"])
    assert again.exit_code == 0 and "1 already traced" in again.stdout
    assert rtrace.stat().st_mtime_ns == traced_at  # not traced again
    (export,) = out.glob("*.trace32")
    assert export.stem == rtrace.stem
    assert load_any(export).instruction_count == load_any(rtrace).instruction_count
