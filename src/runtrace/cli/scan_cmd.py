"""`runtrace scan`: is this program malicious, how sure is the model, and why.

Start-up is kept lean on purpose (the whole process should answer in about a second): this module
imports only typer at load time; the scanner, numpy and the emulator are imported when the command
runs, and torch never is (inference runs on ONNX Runtime, see `runtrace.scan.onnxmodel`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from runtrace.cli.app import (
    INTERRUPTED,
    MAX_FILE_SIZE_HELP,
    app,
    console,
    err_console,
    fail,
    max_file_bytes,
    one_blas_thread,
)


def default_model_dir() -> Path:
    import runtrace

    return Path(runtrace.__file__).resolve().parent / "data" / "models" / "default"


@app.command()
def scan(
    paths: list[Path] = typer.Argument(
        None, help="PE files, directories, zip archives, or trace files (.rtrace, x64dbg, text logs)."
    ),
    model: Path = typer.Option(None, "--model", "-m", help="Model directory (default: the bundled model)."),
    password: str = typer.Option(None, help="Zip password (malware archives usually use 'infected')."),
    json_output: bool = typer.Option(False, "--json", help="Print the result document as JSON."),
    workers: int = typer.Option(0, help="Parallel tracer processes (0: one per CPU)."),
    threshold: float = typer.Option(
        None, help="Flag files with P(malicious) >= this (default: the model's calibrated threshold)."
    ),
    explain: int = typer.Option(5, help="Blocks to show per file in the explanation (0: no explanation)."),
    min_instructions: int = typer.Option(
        200, help="Traces with fewer executed instructions get the verdict 'unknown'."
    ),
    max_instructions: int = typer.Option(
        1_000_000, help="Stop emulating a sample after this many instructions."
    ),
    timeout: float = typer.Option(60.0, help="Wall-clock seconds of emulation per sample."),
    memory_mb: int = typer.Option(1024, help="Memory cap per tracer process (MiB)."),
    dask: str = typer.Option(
        None,
        "--dask",
        metavar="ADDRESS",
        help="Trace on this Dask scheduler (tcp://host:8786) instead of locally.",
    ),
    max_file_size: int = typer.Option(256, "--max-file-size", help=MAX_FILE_SIZE_HELP),
    schema: bool = typer.Option(
        False, "--schema", help="Print the JSON Schema of the --json output and exit."
    ),
) -> None:
    """Decide whether programs are malicious, how sure the model is, and why.

    Exit status: 1 when any file is malicious, else 2 when anything failed, else 0; 130 when stopped
    by Ctrl-C (the files finished by then are reported).
    """
    one_blas_thread()
    if schema:
        import json

        from runtrace.scan.schema import ScanReport

        sys.stdout.write(json.dumps(ScanReport.model_json_schema(), indent=1) + "\n")
        return
    if not paths:
        raise fail("give at least one PATH to scan (a PE file, directory, zip archive or trace file)")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise fail(f"--threshold must be between 0 and 1, not {threshold}")
    if explain < 0 or min_instructions < 0:
        raise fail("--explain and --min-instructions must not be negative")
    max_bytes = max_file_bytes(max_file_size)

    from rich.markup import escape

    from runtrace.scan.calibration import Calibration, CalibrationError, read_calibration
    from runtrace.scan.onnxmodel import ModelError, OnnxModel

    model_dir = model or default_model_dir()
    if model is None and not (model_dir / "config.json").exists():
        raise fail(
            f"no default model installed ({escape(str(model_dir))} is missing or empty); "
            "pass --model DIR with a model directory written by `runtrace train`"
        )
    try:
        onnx_model = OnnxModel.load(model_dir)
        calibration = read_calibration(model_dir)
    except (ModelError, CalibrationError) as e:
        raise fail(escape(str(e))) from None
    if threshold is not None:
        calibration = Calibration(
            threshold, None, "--threshold on the command line (no FPR calibration)", calibration.model_version
        )

    from runtrace.scan.inputs import iter_inputs
    from runtrace.scan.scanner import ScanInterrupted, Scanner, ScanOptions, exit_code, summarize
    from runtrace.scan.schema import ScanReport

    options = ScanOptions(
        min_instructions=min_instructions,
        explain=explain,
        workers=workers,
        max_instructions=max_instructions,
        timeout_s=timeout,
        memory_mb=memory_mb,
        dask=dask,
    )
    scanner = Scanner(onnx_model, calibration, options)
    try:
        inputs = list(iter_inputs(paths, password, max_bytes))
    except KeyboardInterrupt:
        raise fail("interrupted while listing the inputs; nothing was scanned", INTERRUPTED) from None
    interrupted = None
    try:
        results = _run_with_progress(scanner, inputs)
    except ScanInterrupted as stop:
        results, interrupted = stop.results, stop
    except OSError as e:  # no room for the temporary traces, no Dask scheduler: the run cannot go on
        raise fail(escape(f"cannot scan: {e.strerror or e}")) from None
    code = INTERRUPTED if interrupted else exit_code(results)
    report = ScanReport(
        model=scanner.model_info,
        decision=scanner.decision,
        min_instructions=min_instructions,
        results=results,
        summary=summarize(results),
        exit_code=code,
    )
    if json_output:
        sys.stdout.write(report.model_dump_json(indent=1) + "\n")
    else:
        from runtrace.scan.render import render_report

        render_report(report, console)
    for r in results:
        if r.status == "error":
            message = r.reason if r.name in (r.reason or "") else f"{r.name}: {r.reason}"
            err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if interrupted:
        err_console.print(
            f"[yellow]interrupted:[/] {len(results)} of {interrupted.total} inputs scanned (reported above); "
            "the others were not",
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(code)


def _run_with_progress(scanner, inputs: list) -> list:
    if not err_console.is_terminal:
        return scanner.scan(inputs)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("[bold]scanning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[last]}"), console=err_console, transient=True)  # fmt: skip
    with progress:
        task = progress.add_task("scan", total=len(inputs), last="")
        return scanner.scan(
            inputs, on_result=lambda r: progress.update(task, advance=1, last=(r.name or "")[-40:])
        )
