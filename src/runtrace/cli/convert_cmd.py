"""`runtrace convert`: move a run trace between runtrace's file and the debuggers' formats."""

from __future__ import annotations

from pathlib import Path

import typer

from runtrace.cli.app import app, console, fail


@app.command()
def convert(
    source: Path = typer.Argument(
        ..., metavar="IN", help="Trace to read (.rtrace, .trace32/.trace64, text log)."
    ),
    target: Path = typer.Argument(..., metavar="OUT", help="File to write."),
    to: str = typer.Option(
        None, "--to", help="native, x64dbg or text (x64dbg-style log). Default: from OUT's extension."
    ),
    from_: str = typer.Option(
        None, "--from", help="native, x64dbg, text, x64dbg-text or ollydbg. Default: detected."
    ),
    allow_truncated: bool = typer.Option(
        False, "--allow-truncated", help="Keep the readable part of a damaged debugger trace."
    ),
    line_pattern: str = typer.Option(
        None,
        "--line-pattern",
        help="Read a text log with this regex (named groups address, instruction, optional thread).",
    ),
) -> None:
    """Convert a run trace between formats (runtrace's own, x64dbg binary, text logs)."""
    from runtrace.trace.formats.registry import (
        TraceReadError,
        format_for_output,
        left_out,
        load_any,
        read_formats,
        save_as,
        write_formats,
    )

    # The choices come from the format registry (a new format module adds itself), so they are
    # checked here rather than fixed in an Enum.
    if from_ is not None and from_ not in read_formats():
        raise fail(f"--from must be one of {', '.join(read_formats())}, not {from_!r}")
    if to is not None and to not in write_formats():
        raise fail(f"--to must be one of {', '.join(write_formats())}, not {to!r}")
    if not source.is_file():
        raise fail(f"{source}: no such file")
    to = to or format_for_output(target)
    try:
        trace = load_any(source, from_, allow_truncated=allow_truncated, line_pattern=line_pattern)
    except TraceReadError as e:
        raise fail(f"{e}{'' if from_ or line_pattern else '; name its format with --from'}") from None
    except ValueError as e:
        raise fail(str(e)) from None
    try:
        save_as(trace, target, to)
    except ValueError as e:
        raise fail(f"{target}: cannot write {to}: {e}") from None
    except OSError as e:
        raise fail(f"{target}: cannot write: {e.strerror or e}") from None
    counts = f"{trace.instruction_count:,} instructions, {len(trace.blocks):,} blocks"
    counts += f", {trace.visit_count:,} visits"
    console.print(
        f"{source} ({trace.meta.source}, {trace.arch.value}) -> {target} ({to}): {counts}",
        highlight=False,
        soft_wrap=True,
    )
    missing = left_out(trace, to)
    if missing:
        console.print(f"[yellow]note:[/] {missing} (the native and text formats keep them)", highlight=False,
                      soft_wrap=True)  # fmt: skip
    if trace.meta.stop_detail.startswith("truncated"):
        console.print(f"[yellow]note:[/] {trace.meta.stop_detail}", highlight=False, soft_wrap=True)
