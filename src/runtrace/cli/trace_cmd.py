"""`runtrace trace`, `runtrace show` and `runtrace demo`."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from runtrace.cli.app import (
    INTERRUPTED,
    MAX_FILE_SIZE_HELP,
    app,
    console,
    err_console,
    fail,
    max_file_bytes,
)
from runtrace.cli.choices import TraceAlsoWrite

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # unicorn 1.0.2 at import


def _summary_table(outcomes) -> Table:
    table = Table(title="trace summary", show_lines=False)
    for col, justify in [("sample", "left"), ("status", "left"), ("arch", "left"),
                         ("instructions", "right"), ("blocks", "right"), ("API calls", "right"),
                         ("stop reason / error", "left")]:  # fmt: skip
        table.add_column(col, justify=justify, overflow="fold")
    for o in outcomes:
        why = o.error if o.status == "error" else f"{o.stop_reason} {o.stop_detail}".strip()
        status = {"ok": "[green]ok[/]", "skipped": "[cyan]skipped[/]", "error": "[red]error[/]"}[o.status]
        count = f"{o.instruction_count:,}" if o.status == "ok" else ""
        table.add_row(_short(o.name) or o.sha256[:16], status, o.arch, count,
                      f"{o.block_count:,}" if o.status == "ok" else "",
                      f"{o.api_call_count:,}" if o.status == "ok" else "", why)  # fmt: skip
    return table


def _short(name: str) -> str:
    """The file name (or archive member) without its directories, for the terminal table."""
    return name.rsplit("/", 1)[-1] if name else ""


@app.command()
def trace(
    paths: list[Path] = typer.Argument(..., help="PE files, directories or zip archives."),
    out: Path = typer.Option(..., "-o", "--out", help="Directory for the traces and summary.json."),
    password: str = typer.Option(None, help="Zip password (malware archives usually use 'infected')."),
    max_instructions: int = typer.Option(1_000_000, help="Stop a sample after this many instructions."),
    timeout: float = typer.Option(60.0, help="Wall-clock seconds per sample."),
    memory_mb: int = typer.Option(1024, help="Memory cap per tracer process (MiB)."),
    workers: int = typer.Option(0, help="Parallel tracer processes (0: one per CPU)."),
    fmt: TraceAlsoWrite = typer.Option(TraceAlsoWrite.NATIVE, "--format", help="Also write x64dbg traces."),
    retry_errors: bool = typer.Option(False, help="Trace again samples that failed before."),
    dask: str = typer.Option(
        None,
        "--dask",
        metavar="ADDRESS",
        help="Trace on this Dask scheduler (tcp://host:8786) instead of locally.",
    ),
    max_file_size: int = typer.Option(256, "--max-file-size", help=MAX_FILE_SIZE_HELP),
) -> None:
    """Emulate PE files and record their run traces (nothing is executed natively).

    Run again with the same settings, it skips what is already traced.  Ctrl-C stops the tracer
    processes; finished traces and summary.json are kept.
    """
    from runtrace.trace.emulate.batch import BatchInterrupted, summarize, trace_batch
    from runtrace.trace.emulate.emulator import TracerSettings
    from runtrace.trace.emulate.inputs import iter_samples

    extra = _x64dbg_writer if fmt is TraceAlsoWrite.X64DBG else None
    settings = TracerSettings(max_instructions=max_instructions, timeout_s=timeout, memory_mb=memory_mb)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(f"{out}: cannot create output directory: {e.strerror}") from None
    max_bytes = max_file_bytes(max_file_size)
    try:
        samples = list(iter_samples(paths, password, max_bytes))
    except KeyboardInterrupt:
        raise fail("interrupted while listing the inputs; nothing was traced", INTERRUPTED) from None
    progress = Progress(TextColumn("[bold]tracing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[last]}"), console=err_console, transient=True)  # fmt: skip
    with progress:
        task = progress.add_task("trace", total=len(samples), last="")

        def advance(o) -> None:
            progress.update(task, advance=1, last=(o.name or "")[-40:])

        interrupted = None
        try:
            if dask:
                outcomes = _on_dask(samples, out, dask, settings, advance, retry_errors, extra)
            else:
                outcomes = trace_batch(
                    samples, out, settings, workers or os.cpu_count(), retry_errors=retry_errors,
                    extra_writer=extra, on_done=advance,
                )  # fmt: skip
        except BatchInterrupted as stop:
            outcomes, interrupted = stop.outcomes, stop
    summary = summarize(outcomes)
    if interrupted is not None:
        summary["interrupted"] = {"unfinished": interrupted.unfinished}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    console.print(_summary_table(outcomes))
    by = summary["by_status"]
    counts = f"{by.get('ok', 0)} traced, {by.get('skipped', 0)} already traced, {by.get('error', 0)} errors"
    console.print(f"{len(outcomes)} samples: {counts}; summary in {out / 'summary.json'}")
    for o in outcomes:
        if o.status == "error":
            err_console.print(f"[red]error:[/] {o.name}: {o.error}", highlight=False, soft_wrap=True)
    if interrupted is not None:
        err_console.print(
            f"[yellow]interrupted:[/] {len(outcomes)} samples finished (listed above, kept in {out}), "
            f"{interrupted.unfinished} not; run the same command again to trace the rest",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(INTERRUPTED)


def _on_dask(samples, out: Path, address: str, settings, on_done, retry_errors: bool, extra) -> list:
    from runtrace.trace.emulate.dask_runner import DaskUnavailable, trace_batch_dask

    try:
        return trace_batch_dask(samples, out, address, settings, on_done, retry_errors, extra)
    except DaskUnavailable as e:
        raise fail(str(e)) from None


def _x64dbg_writer(trace, out_dir: Path) -> None:
    from runtrace.trace.formats.registry import save_as

    ext = ".trace32" if trace.arch.bits == 32 else ".trace64"
    save_as(trace, out_dir / f"{trace.meta.sha256}{ext}", "x64dbg")


def _load(path: Path):
    from runtrace.trace.formats.registry import TraceReadError, load_any

    if not path.exists():
        raise fail(f"{path}: no such file")
    try:
        return load_any(path)
    except (TraceReadError, ValueError, OSError) as e:
        raise fail(str(e) if str(path) in str(e) else f"{path}: {e}") from None


@app.command()
def show(
    path: Path = typer.Argument(..., help="A trace file (.rtrace, x64dbg .trace32/.trace64, text log)."),
    blocks: bool = typer.Option(False, "--blocks", help="Print basic blocks instead of instructions."),
    limit: int = typer.Option(0, help="Print at most this many lines (0: all)."),
    meta: bool = typer.Option(False, "--meta", help="Print only the trace's metadata as JSON."),
    summary: bool = typer.Option(
        False, "--summary", help="Print only what the program did: files, registry, network, processes, ..."
    ),
) -> None:
    """Print a trace as a text run trace (`00401000  push ebp`) or as blocks."""
    tr = _load(path)
    if summary:
        _print_behaviour(tr)
        return
    if meta:
        from runtrace.trace.formats.native import _meta_to_json

        counts = {"instructions": tr.instruction_count, "blocks": len(tr.blocks), "visits": tr.visit_count}
        info = _meta_to_json(tr.meta) | counts | {"api_calls": len(tr.api_calls)}
        console.print_json(json.dumps(info))
        return
    width = 16 if tr.arch.bits == 64 else 8
    calls = tr.api_calls_by_position()
    lines = 0
    write = console.file.write
    try:
        for pos, block_id in enumerate(tr.visits.tolist()):
            insns = tr.block_instructions(block_id)
            if blocks:
                b = tr.blocks[block_id]
                write(f"block {block_id} @ {b.address:0{width}X} ({b.instruction_count} instructions)\n")
                for insn in insns:
                    write(f"    {insn.address:0{width}X}  {insn.text}\n")
                lines += 1
            else:
                for insn in insns:
                    write(f"{insn.address:0{width}X}  {insn.text}\n")
                    lines += 1
                    if limit and lines >= limit:
                        break
            for call in calls.get(pos, ()):
                stub = "" if call.supported else "  (stubbed)"
                returns = f"returns to {call.return_address:0{width}X}"
                write(f"{'':{width}}  ; api {call.signature()} -> {returns}{stub}\n")
            if limit and lines >= limit:
                break
    except BrokenPipeError:  # `runtrace show x | head`
        os._exit(0)


def _print_behaviour(tr) -> None:
    behaviour = tr.meta.behaviour
    write = console.file.write
    if not behaviour:
        why = "" if tr.meta.source == "emulator" else f" (a {tr.meta.source} trace records none)"
        write(f"no behaviour recorded{why}\n")
        return
    for kind, items in behaviour.items():
        write(f"{kind} ({len(items)}):\n")
        for item in items:
            if isinstance(item, dict):
                event = item.get("event", "")
                rest = "  ".join(str(v) for k, v in item.items() if k != "event")
                write(f"  {event:<10} {rest}\n")
            else:
                write(f"  {item}\n")
