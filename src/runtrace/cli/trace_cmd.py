"""`runtrace trace` and `runtrace show`."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from runtrace.cli.app import INTERRUPTED, app, console, err_console, fail
from runtrace.cli.choices import TraceAlsoWrite
from runtrace.cli.options import TracerRun, tracer_options
from runtrace.cli.progress import LoggedProgress

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # unicorn 1.0.2 at import


def _list_inputs(items) -> list:
    """The inputs, read (hashed) with a progress line: an encrypted zip's members are decrypted by
    Python's zipfile at about 1 MB/s, so a malware archive of 100 MB takes minutes before the first
    trace starts."""
    listing = LoggedProgress(
        TextColumn("[bold]reading inputs"), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"), console=err_console, transient=True,
    )  # fmt: skip
    samples = []
    with listing:
        task = listing.add_task("reading inputs", total=None, last="")
        for item in items:
            samples.append(item)
            listing.update(task, advance=1, last=(item.name or "")[-40:])
    return samples


def _summary_table(outcomes) -> Table:
    from runtrace.paths import short_names

    table = Table(title="trace summary", show_lines=False, pad_edge=False)
    columns = [("sample", "left"), ("status", "left"), ("arch", "left"), ("instr.", "right"),
               ("blocks", "right"), ("APIs", "right"), ("stop reason / error", "left")]  # fmt: skip
    for col, justify in columns:
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col == "sample")
    names = short_names([o.name or o.sha256 for o in outcomes])
    for o, name in zip(outcomes, names, strict=True):
        why = o.error if o.status == "error" else f"{o.stop_reason} {o.stop_detail}".strip()
        status = {"ok": "[green]ok[/]", "skipped": "[cyan]skipped[/]", "error": "[red]error[/]"}[o.status]
        counts = [o.instruction_count, o.block_count, o.api_call_count] if o.status != "error" else []
        table.add_row(name, status, o.arch, *(f"{n:,}" for n in counts), *[""] * (3 - len(counts)), why)
    return table


@app.command()
@tracer_options()
def trace(
    paths: list[Path] = typer.Argument(..., help="PE files, directories or zip archives."),
    out: Path = typer.Option(..., "-o", "--out", help="Directory for the traces and summary.json."),
    password: str = typer.Option(None, help="Zip password (malware archives usually use 'infected')."),
    fmt: TraceAlsoWrite = typer.Option(
        TraceAlsoWrite.NATIVE,
        "--format",
        help="x64dbg: also write an x64dbg trace (.trace32/.trace64) of every sample, including those "
        "traced by an earlier run.",
    ),
    retry_errors: bool = typer.Option(
        False, "--retry-errors", help="Trace again samples that failed before."
    ),
    tracer: TracerRun = None,
) -> None:
    """Emulate PE files and record their run traces (nothing is executed natively).

    Run again with the same settings, it skips what is already traced.  Ctrl-C stops the tracer
    processes; finished traces and summary.json are kept.  Exit status: 0 when every input was traced,
    2 when any failed, 130 when stopped by Ctrl-C.
    """
    from runtrace.trace.emulate.batch import BatchInterrupted, save_summary, trace_batch
    from runtrace.trace.emulate.inputs import iter_samples
    from runtrace.trace.formats.x64dbg import write_export

    extra = write_export if fmt is TraceAlsoWrite.X64DBG else None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(f"{out}: cannot create output directory: {e.strerror}") from None
    try:
        samples = _list_inputs(iter_samples(paths, password, tracer.max_bytes))
    except KeyboardInterrupt:
        raise fail("interrupted while listing the inputs; nothing was traced", INTERRUPTED) from None
    progress = LoggedProgress(
        TextColumn("[bold]tracing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"), console=err_console, transient=True,
    )  # fmt: skip
    with progress:
        task = progress.add_task("trace", total=len(samples), last="")

        def advance(o) -> None:
            progress.update(task, advance=1, last=(o.name or "")[-40:])

        interrupted = None
        try:
            if tracer.dask:
                outcomes = _on_dask(samples, out, tracer, advance, retry_errors, extra)
            else:
                workers = tracer.workers or os.cpu_count()
                outcomes = trace_batch(samples, out, tracer.settings, workers, retry_errors=retry_errors,
                                       extra_writer=extra, on_done=advance)  # fmt: skip
        except BatchInterrupted as stop:
            outcomes, interrupted = stop.outcomes, stop
    summary = save_summary(out, outcomes, None if interrupted is None else interrupted.unfinished)
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
    if by.get("error"):
        raise typer.Exit(2)


def _on_dask(samples, out: Path, tracer: TracerRun, on_done, retry_errors: bool, extra) -> list:
    from runtrace.trace.emulate.dask_runner import DaskUnavailable, trace_batch_dask

    try:
        return trace_batch_dask(samples, out, tracer.dask, tracer.settings, on_done, retry_errors, extra)
    except DaskUnavailable as e:
        raise fail(str(e)) from None


def _load(path: Path, fmt: str | None = None):
    from runtrace.trace.formats.registry import TraceReadError, load_any, read_formats

    if fmt is not None and fmt not in read_formats():
        raise fail(f"--from must be one of {', '.join(read_formats())}, not {fmt!r}")
    if not path.exists():
        raise fail(f"{path}: no such file")
    try:
        return load_any(path, fmt)
    except TraceReadError as e:
        hint = "" if fmt else "; name its format with --from"
        raise fail(f"{e}{hint}") from None
    except (ValueError, OSError) as e:
        raise fail(str(e) if str(path) in str(e) else f"{path}: {e}") from None


@app.command()
def show(
    path: Path = typer.Argument(..., help="A trace file (.rtrace, x64dbg .trace32/.trace64, text log)."),
    blocks: bool = typer.Option(False, "--blocks", help="Print basic blocks instead of instructions."),
    limit: int = typer.Option(
        0, help="Print at most this many instructions, or with --blocks this many blocks (0: all)."
    ),
    meta: bool = typer.Option(False, "--meta", help="Print only the trace's metadata as JSON."),
    summary: bool = typer.Option(
        False, "--summary", help="Print only what the program did: files, registry, network, processes, ..."
    ),
    from_: str = typer.Option(
        None,
        "--from",
        help="The trace's format (native, x64dbg, text, x64dbg-text, ollydbg). Default: detected.",
    ),
) -> None:
    """Print a trace as a text run trace (`00401000  push ebp`, API calls with their arguments as
    `; api` lines), as blocks, its metadata or its behaviour summary."""
    if limit < 0:
        raise fail("--limit must be 0 (no limit) or more")
    tr = _load(path, from_)
    if summary:
        _print_behaviour(tr)
        return
    if meta:
        from runtrace.trace.formats.native import meta_to_json

        counts = {"instructions": tr.instruction_count, "blocks": len(tr.blocks), "visits": tr.visit_count}
        info = meta_to_json(tr.meta) | counts | {"api_calls": len(tr.api_calls)}
        console.print_json(json.dumps(info))
        return
    from runtrace.trace.formats.textlog import api_comment

    width = 16 if tr.arch.bits == 64 else 8
    calls = tr.api_calls_by_position()
    shown = 0  # instructions, or blocks with --blocks: what --limit counts
    write = console.file.write
    try:
        for pos, block_id in enumerate(tr.visits.tolist()):
            insns = tr.block_instructions(block_id)
            if blocks:
                b = tr.blocks[block_id]
                write(f"block {block_id} @ {b.address:0{width}X} ({b.instruction_count} instructions)\n")
                for insn in insns:
                    write(f"    {insn.address:0{width}X}  {insn.text}\n")
                shown += 1
            else:
                for insn in insns:
                    write(f"{insn.address:0{width}X}  {insn.text}\n")
                    shown += 1
                    if limit and shown >= limit:
                        break
            for call in calls.get(pos, ()):
                write(api_comment(call, width) + "\n")
            if limit and shown >= limit:
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
