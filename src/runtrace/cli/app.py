"""The typer application every command module registers on, and the shared error conventions."""

from __future__ import annotations

import os

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup


class _OneLineBadValues(TyperGroup):
    """A bad option or argument value (not among its choices, not a number, missing) is one `error:`
    line like every other input problem, instead of typer's boxed usage text."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except typer.BadParameter as e:
            where = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
            err_console.print(
                f"[bold red]error:[/] {escape(e.format_message())}{where}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(e.exit_code) from None


app = typer.Typer(
    cls=_OneLineBadValues,
    name="runtrace",
    help="Detect malicious Windows programs from their run traces (emulated, never executed natively).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


class UserError(Exception):
    """A problem with the user's input: shown as one line, never as a traceback."""


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


# Shared by every command that reads samples (trace, scan, corpus trace).
MAX_FILE_SIZE_HELP = "Inputs larger than this many MiB get an error, unread (0: no limit)."
INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C (128 + SIGINT)


def one_blas_thread() -> None:
    """One BLAS / OpenMP thread for the scanner's numpy work (scan, serve): its matrix products are
    small, threads buy nothing, and on a busy machine their spinning slowed the explanation 30-fold
    (measured on 2 cores).  Must run before numpy loads OpenBLAS; a value the user set wins."""
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")


def max_file_bytes(max_file_size_mb: int) -> int | None:
    """--max-file-size in bytes (None: no limit); a negative value is a user error."""
    if max_file_size_mb < 0:
        raise fail(f"--max-file-size must be 0 (no limit) or more, not {max_file_size_mb}")
    return max_file_size_mb * 1024 * 1024 or None
