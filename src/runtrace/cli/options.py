"""Options several commands share, defined once: the tracer's limits, `--dask`, `--workers` and
`--max-file-size`.

`@tracer_options()` adds them to a command (after its own options) and hands the command one
`TracerRun` argument named `tracer` instead of the separate values.  The defaults come from
`runtrace.trace.settings.TracerSettings`, the tracer's one definition of its limits.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass

import typer

from runtrace.cli.app import fail
from runtrace.trace.emulate.inputs import DEFAULT_MAX_FILE_MB, MIB
from runtrace.trace.settings import DEFAULTS, TracerSettings


@dataclass(frozen=True)
class TracerRun:
    """How a command traces samples: the tracer's settings, where (locally or on a Dask cluster), with
    how many local processes, and the largest input it reads."""

    settings: TracerSettings
    dask: str | None = None
    workers: int = 0  # local tracer processes; 0: one per CPU
    max_bytes: int | None = DEFAULT_MAX_FILE_MB * MIB  # None: no limit


def _limits() -> dict[str, tuple[type, typer.models.OptionInfo]]:
    return {
        "max_instructions": (
            int,
            typer.Option(
                DEFAULTS.max_instructions,
                "--max-instructions",
                help="Stop emulating a sample after this many instructions.",
            ),
        ),
        "timeout": (
            float,
            typer.Option(DEFAULTS.timeout_s, "--timeout", help="Wall-clock seconds of emulation per sample."),
        ),
        "memory_mb": (
            int,
            typer.Option(DEFAULTS.memory_mb, "--memory-mb", help="Memory cap per tracer process (MiB)."),
        ),
        "dask": (
            typing.Optional[str],  # noqa: UP045  (typer reads the annotation object itself)
            typer.Option(
                None,
                "--dask",
                metavar="ADDRESS",
                help="Trace on this Dask scheduler (tcp://host:8786) instead of locally.",
            ),
        ),
    }


def _workers() -> tuple[type, typer.models.OptionInfo]:
    return int, typer.Option(0, "--workers", help="Parallel tracer processes (0: one per CPU).")


def _max_file_size() -> tuple[type, typer.models.OptionInfo]:
    return int, typer.Option(
        DEFAULT_MAX_FILE_MB,
        "--max-file-size",
        metavar="MIB",
        help="Inputs larger than this many MiB get an error, unread (0: no limit).",
    )


def tracer_options(*, workers: bool = True, max_file_size: bool = True):
    """Add the tracer's options to a command whose parameter `tracer: TracerRun` receives them."""

    def decorate(command):
        added = _limits()
        if workers:
            added["workers"] = _workers()
        if max_file_size:
            added["max_file_size"] = _max_file_size()
        hints = typing.get_type_hints(command)
        signature = inspect.signature(command)
        if "tracer" not in signature.parameters:
            raise TypeError(f"{command.__name__} needs a `tracer` parameter for @tracer_options")
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
               if p.name != "tracer"]  # fmt: skip
        extra = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=kind)
            for name, (kind, info) in added.items()
        ]

        @functools.wraps(command)
        def run(**values):
            given = {name: values.pop(name) for name in added}
            values["tracer"] = tracer_run(**given)
            return command(**values)

        run.__signature__ = signature.replace(parameters=own + extra)
        run.__annotations__ = {p.name: p.annotation for p in own + extra}
        return run

    return decorate


def tracer_run(
    max_instructions: int = DEFAULTS.max_instructions,
    timeout: float = DEFAULTS.timeout_s,
    memory_mb: int = DEFAULTS.memory_mb,
    dask: str | None = None,
    workers: int = 0,
    max_file_size: int = DEFAULT_MAX_FILE_MB,
) -> TracerRun:
    """The options' values, checked; a bad one is a one-line error naming its option."""
    for flag, value in (("--max-instructions", max_instructions), ("--memory-mb", memory_mb),
                        ("--workers", workers), ("--max-file-size", max_file_size)):  # fmt: skip
        if value < 0:
            raise fail(f"{flag} must be 0 or more, not {value}")
    if timeout < 0:
        raise fail(f"--timeout must be 0 or more, not {timeout}")
    settings = TracerSettings(max_instructions=max_instructions, timeout_s=timeout, memory_mb=memory_mb)
    return TracerRun(settings, dask, workers, max_file_size * MIB or None)
