"""`runtrace scan`: is this program malicious, how sure is the model, and why.

Parses the options, hands the inputs to `runtrace.scan.scanner.Scanner` (which builds the result
document) and prints it.  Start-up is kept lean on purpose (the whole process should answer in well
under a second): at load time this module imports typer and import-free modules only (the shared
options, `scan.defaults`); the scanner, numpy and the emulator are imported when the command runs, rich
only to print something other than JSON (the table, an error, a progress bar on a terminal), and torch
never (inference runs on ONNX Runtime).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from runtrace.cli.app import INTERRUPTED, app, fail, one_blas_thread, start_up, stderr_may_be_a_terminal
from runtrace.cli.options import TracerRun, tracer_options
from runtrace.scan.defaults import DEFAULT_EXPLAIN
from runtrace.trace.emulate.inputs import Sample


@app.command()
@tracer_options()
def scan(
    paths: list[Path] = typer.Argument(
        None, help="PE files, directories, zip archives, or trace files (.rtrace, x64dbg, text logs)."
    ),
    model: Path = typer.Option(None, "--model", "-m", help="Model directory (default: the bundled model)."),
    password: str = typer.Option(None, help="Zip password (malware archives usually use 'infected')."),
    json_output: bool = typer.Option(False, "--json", help="Print the result document as JSON."),
    threshold: float = typer.Option(
        None, help="Flag files with P(malicious) >= this (default: the model's calibrated threshold)."
    ),
    explain: int = typer.Option(
        DEFAULT_EXPLAIN,
        help="Blocks shown per direction (towards malicious, towards benign); 0: no explanation.",
    ),
    min_instructions: int = typer.Option(
        None,
        help="Traces with fewer executed instructions get the verdict 'unknown' "
        "(default: the shortest trace the model was trained on).",
    ),
    neighbours: int = typer.Option(
        5, min=0, help="Nearest known files (by executed code) listed beside each verdict; 0: none."
    ),
    index: Path = typer.Option(
        None, "--index", help="Similarity index folder (default: the model's similar/, when it has one)."
    ),
    schema: bool = typer.Option(
        False, "--schema", help="Print the JSON Schema of the --json output and exit."
    ),
    tracer: TracerRun = None,
) -> None:
    """Decide whether programs are malicious, how sure the model is, and why.

    Exit status: 1 when any file is malicious, else 2 when anything failed, else 3 when a file could not
    be judged (unknown), else 0; 130 when stopped by Ctrl-C (the files finished by then are reported).
    """
    one_blas_thread()
    if schema:
        import json

        from runtrace.scan.schema import ScanReport

        sys.stdout.write(json.dumps(ScanReport.model_json_schema(), indent=1) + "\n")
        return
    if not paths:
        raise fail("give at least one PATH to scan (a PE file, directory, zip archive or trace file)")
    if explain < 0 or (min_instructions is not None and min_instructions < 0):
        raise fail("--explain and --min-instructions must not be negative")

    with start_up():
        from runtrace.scan.inputs import iter_inputs
        from runtrace.scan.scanner import Scanner, ScannerError, ScanOptions

        options = ScanOptions(min_instructions=min_instructions, explain=explain, workers=tracer.workers,
                              tracer=tracer.settings, dask=tracer.dask, neighbours=neighbours)  # fmt: skip
        try:
            scanner = Scanner.load(model, options, threshold, index)
        except ScannerError as e:
            raise fail(str(e)) from None
        try:
            inputs = list(iter_inputs(paths, password, tracer.max_bytes))
        except KeyboardInterrupt:
            raise fail("interrupted while listing the inputs; nothing was scanned", INTERRUPTED) from None
        if not tracer.dask and any(isinstance(item, Sample) for item in inputs):
            import runtrace.trace.emulate.batch  # noqa: F401  (the tracer: Speakeasy and unicorn, here in start-up)
    try:
        report = run_with_progress(scanner, inputs)
    except OSError as e:  # no room for the temporary traces, no Dask scheduler: the run cannot go on
        raise fail(f"cannot scan: {e.strerror or e}") from None
    if json_output:
        sys.stdout.write(report.model_dump_json(indent=1) + "\n")
    else:
        from runtrace.cli.app import console
        from runtrace.scan.render import render_report

        render_report(report, console)
    finish(report, "scanned")


def finish(report, done: str) -> None:
    """The end of a `scan` or `similar` run: each failed input in one line on stderr, a word when the
    run was interrupted, and the report's exit status."""
    failed = [r for r in report.results if r.status == "error"]
    if failed or report.exit_code == INTERRUPTED:  # rich is imported only to say something
        from rich.markup import escape

        from runtrace.cli.app import err_console
    for r in failed:
        message = r.reason if r.name in (r.reason or "") else f"{r.name}: {r.reason}"
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if report.exit_code == INTERRUPTED:
        err_console.print(
            f"[yellow]interrupted:[/] {len(report.results)} of {report.inputs} inputs {done} (reported "
            "above); the others were not",
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(report.exit_code)


def run_with_progress(runner, inputs: list, label: str = "scanning"):
    """`runner.run(inputs)` (a Scanner's or a NeighbourFinder's), with a progress bar on a terminal."""
    if not stderr_may_be_a_terminal():
        return runner.run(inputs)
    from runtrace.cli.app import err_console

    if not err_console.is_terminal:
        return runner.run(inputs)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[last]}"), console=err_console, transient=True)  # fmt: skip
    with progress:
        task = progress.add_task("scan", total=len(inputs), last="")
        return runner.run(
            inputs, on_result=lambda r: progress.update(task, advance=1, last=(r.name or "")[-40:])
        )
