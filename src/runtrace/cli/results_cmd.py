"""`runtrace results`: docs/results.md (our figures beside the paper's) from evaluation reports."""

from __future__ import annotations

from pathlib import Path

import typer

from runtrace.cli.app import app, console, fail


@app.command()
def results(
    reports: list[Path] = typer.Argument(
        ..., help="Report directories (runtrace evaluate -o) or metrics.json."
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Markdown file to write, e.g. docs/results.md."),
    notes: Path = typer.Option(None, help="Markdown placed after the comparison (the findings)."),
) -> None:
    """Write the results page from evaluation reports: every figure read from their metrics.json."""
    from runtrace.evaluate.render_results_page import render_results_page
    from runtrace.evaluate.result_document import EvaluationResults, ResultsError

    try:
        read = [(path, EvaluationResults.read(path)) for path in reports]
    except ResultsError as e:
        raise fail(str(e)) from None
    try:
        text = notes.read_text(encoding="utf-8") if notes else ""
    except OSError as e:
        raise fail(f"{notes}: cannot read ({e.strerror or e})") from None
    try:
        out.write_text(render_results_page(read, text), encoding="utf-8")
    except OSError as e:
        raise fail(f"{out}: cannot write ({e.strerror or e})") from None
    console.print(f"wrote {out}", highlight=False)
