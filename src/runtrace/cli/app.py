"""The typer application every command module registers on, and the shared error conventions.

Start-up is kept lean (a `runtrace scan` answers in well under a second): `app` imports the module of a
command only when the command line names it or a caller asks for every command (`RuntraceTyper`), and
rich, for `console` and `err_console`, when one of them is first used.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import os
import sys
from contextlib import contextmanager

import typer
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
    from rich.markup import escape

    where = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
    _console("err_console").print(
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
            from rich.markup import escape

            _console("err_console").print(
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


# The module (under runtrace.cli) that registers each command and command group of `runtrace`.
COMMANDS = {
    "calibrate": "calibrate_cmd",
    "convert": "convert_cmd",
    "corpus": "corpus_cmd",
    "dataset": "dataset_cmd",
    "demo": "demo_cmd",
    "evaluate": "evaluate_cmd",
    "export": "export_cmd",
    "results": "results_cmd",
    "scan": "scan_cmd",
    "serve": "serve_cmd",
    "similar": "similar_cmd",
    "train": "train_cmd",
    "trace": "trace_cmd",
    "show": "trace_cmd",
}


class RuntraceTyper(typer.Typer):
    """The `runtrace` application, whose commands register themselves when their modules are imported.

    The modules are imported the first time typer reads the registered commands (building the command
    line, `CliRunner().invoke(app, ...)`), all of them; or, when `load_only(name)` came first, only the
    module of that command.  `main()` does that with the command it is given, so that a `runtrace scan`
    process does not import what `corpus`, `train` or `serve` need (about 20 ms of CPU, measured)."""

    def __init__(self, *args, **kwargs) -> None:
        self._loaded = True  # typer's __init__ assigns the registration lists: nothing to import yet
        super().__init__(*args, **kwargs)
        self._loaded = False

    @property
    def registered_commands(self) -> list:
        self._load_all()
        return self._registered_commands

    @registered_commands.setter
    def registered_commands(self, value: list) -> None:
        self._registered_commands = value

    @property
    def registered_groups(self) -> list:
        self._load_all()
        return self._registered_groups

    @registered_groups.setter
    def registered_groups(self, value: list) -> None:
        self._registered_groups = value

    def _load_all(self) -> None:
        if not self._loaded:
            self._loaded = True  # before importing: each module registers on this object
            for module in dict.fromkeys(COMMANDS.values()):
                importlib.import_module(f"runtrace.cli.{module}")

    def load_only(self, name: str) -> bool:
        """Register only the command or command group `name`, if it is one and nothing is registered
        yet; False (nothing done) otherwise."""
        if self._loaded or name not in COMMANDS:
            return False
        self._loaded = True
        importlib.import_module(f"runtrace.cli.{COMMANDS[name]}")
        return True


app = RuntraceTyper(
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


def __getattr__(name: str):
    """`console` (stdout) and `err_console` (stderr), rich Consoles made when first asked for: importing
    rich is about 18 ms of CPU, which a `runtrace scan --json` that has nothing to report on stderr
    need not pay."""
    if name not in ("console", "err_console"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    globals().setdefault("console", Console())
    globals().setdefault("err_console", Console(stderr=True))
    return globals()[name]


def _console(name: str):
    made = globals().get(name)
    return made if made is not None else __getattr__(name)


def stderr_may_be_a_terminal() -> bool:
    """False where rich would certainly not take stderr for a terminal (so no progress bar is drawn),
    decided without importing rich; True means: ask `err_console.is_terminal`.  rich reads
    TTY_COMPATIBLE (0: never a terminal, 1: always), then FORCE_COLOR (set: a terminal unless empty),
    then the stream's isatty()."""
    tty_compatible = os.environ.get("TTY_COMPATIBLE", "")
    if tty_compatible == "0":
        return False
    if tty_compatible == "1" or os.environ.get("FORCE_COLOR") is not None:
        return True
    stream = sys.stderr
    if getattr(stream, "rich_proxied_file", None) is not None:  # inside a rich live display
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no stream, or a closed one: rich says no terminal too
        return False


def fail(message: str, code: int = 2) -> typer.Exit:
    from rich.markup import escape

    _console("err_console").print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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


# True when the command line runs as its own process (`main`), not inside a caller (CliRunner, a test).
_own_process = False


def running_as_own_process() -> None:
    global _own_process
    _own_process = True


@contextmanager
def start_up():
    """A command's start-up (its imports, loading its model) with Python's cyclic garbage collector
    paused; in a process of its own, what it made is frozen afterwards (`gc.freeze`).

    Imports make hundreds of thousands of long-lived objects and next to no garbage, yet the collector
    kept scanning them: about 60 ms of CPU of a one-file `runtrace scan` went to collections (measured
    with gc.callbacks).  Frozen, they are never scanned again, neither here nor in a forked tracer child
    (whose collections would otherwise also write to, and so copy, the parent's pages).  Garbage left in
    cycles by start-up, if any, is frozen with the rest: a one-time cost, and why a caller's process
    (a test) is not frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _own_process:
            gc.freeze()
        if enabled:
            gc.enable()


def max_file_bytes(max_file_size_mb: int) -> int | None:
    """--max-file-size in bytes (None: no limit); a negative value is a user error."""
    if max_file_size_mb < 0:
        raise fail(f"--max-file-size must be 0 (no limit) or more, not {max_file_size_mb}")
    return max_file_size_mb * 1024 * 1024 or None
