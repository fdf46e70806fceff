"""The typer application every command module registers on, and the shared error conventions."""

from __future__ import annotations

import inspect
import os

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

# Words that, after a flag, mean the user wrote `--json true`: a flag takes no value.
_BOOLEAN_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


class RuntraceGroup(TyperGroup):
    """The command groups of `runtrace`, with the conventions every command shares:

    - a bad option or argument value (not among its choices, not a number, missing) is one `error:`
      line like every other input problem, instead of typer's boxed usage text;
    - a flag followed by a word like `true` (`--json true`) is that error, not a path named "true";
    - help shows flags as flags (typer writes `--json <bool>`, which reads as if it took a value) and
      joins the lines of each help paragraph, which typer's rich mode would keep as written.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except typer.BadParameter as e:
            _one_line(e)
            raise typer.Exit(e.exit_code) from None

    def parse_args(self, ctx, args):
        _refuse_flag_values(self, ctx, args)
        return super().parse_args(ctx, args)

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _tidy(command, ctx)
        return command

    def get_params(self, ctx):
        params = super().get_params(ctx)
        _tidy(self, ctx)
        return params


def _one_line(e: typer.BadParameter) -> None:
    where = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
    err_console.print(
        f"[bold red]error:[/] {escape(e.format_message())}{where}", highlight=False, soft_wrap=True
    )


def _refuse_flag_values(group: TyperGroup, ctx, args: list[str]) -> None:
    """`runtrace scan --json true x.exe` would scan a file named "true"; say what is wrong instead."""
    if not args or args[0].startswith("-"):
        return
    command = group.get_command(ctx, args[0])
    if command is None or isinstance(command, TyperGroup):
        return
    flags = {
        name for p in command.params if getattr(p, "is_flag", False) for name in (*p.opts, *p.secondary_opts)
    }
    for flag, value in zip(args[1:], args[2:], strict=False):
        if flag in flags and value.lower() in _BOOLEAN_WORDS:
            err_console.print(
                f"[bold red]error:[/] {flag} is a flag and takes no value: write {flag} alone, not "
                f"{flag} {escape(value)} (see runtrace {args[0]} --help)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2)


def _tidy(command, ctx) -> None:
    if getattr(command, "_runtrace_tidy", False):
        return
    command._runtrace_tidy = True
    if command.help:
        paragraphs = inspect.cleandoc(command.help).split("\n\n")
        command.help = "\n\n".join(" ".join(p.split()) for p in paragraphs)
    helper = command.get_help_option(ctx)
    for param in [*command.params, *([helper] if helper is not None else [])]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # no `<bool>`: a flag takes no value


app = typer.Typer(
    cls=RuntraceGroup,
    name="runtrace",
    help="Detect malicious Windows programs from their run traces (emulated, never executed natively).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def sub_app(help: str) -> typer.Typer:  # noqa: A002  (typer's own name for it)
    """A command group under `runtrace` (corpus, dataset), with the same conventions."""
    return typer.Typer(cls=RuntraceGroup, help=help, no_args_is_help=True)


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
