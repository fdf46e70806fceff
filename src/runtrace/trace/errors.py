"""The one error every trace reader raises for input it cannot read."""

from __future__ import annotations

from pathlib import Path


class TraceReadError(ValueError):
    """A trace file that cannot be read.

    The message is always one line, `<file>: byte <offset>: <problem>` or `<file>: line <n>: <problem>`,
    so a command can print it as is and a user can find the spot with a hex editor or a text editor.
    """


def at_byte(path: str | Path, offset: int, problem: str) -> TraceReadError:
    return TraceReadError(f"{path}: byte {offset}: {_one_line(problem)}")


def at_line(path: str | Path, line: int, problem: str) -> TraceReadError:
    return TraceReadError(f"{path}: line {line}: {_one_line(problem)}")


def _one_line(text: str) -> str:
    return " ".join(text.split())
