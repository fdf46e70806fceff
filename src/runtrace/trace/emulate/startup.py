"""What every emulated process starts with: its command line, arguments, environment and standard input.

The same for every file (nothing here may depend on what a file is or where it came from).  A program
the emulated program starts (`processes.py`) gets its own path and command line instead.  Console
tools run without arguments mostly print their usage and exit, a few dozen instructions into `main`;
given one plausible argument, the path of a document that exists in Speakeasy's emulated file system
(its configuration serves every `.txt` path from a small file), they go on to open and process it.
Programs that read standard input get a few short lines of text instead of an immediate end of file.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

PROGRAM = r"C:\Users\user\Desktop\program.exe"
DOCUMENT = r"C:\Users\user\Documents\notes.txt"
COMMAND_LINE = f"{PROGRAM} {DOCUMENT}"


def arguments(command_line: str) -> tuple[str, ...]:
    """`argv` as the C runtime splits a command line: at spaces outside quotes, the quotes removed."""
    return tuple(arg.replace('"', "") for arg in shlex.split(command_line, posix=False))


ARGV = arguments(COMMAND_LINE)


@dataclass(frozen=True)
class Process:
    """Where an emulated process's image lies and the command line it was started with."""

    program: str
    command_line: str


FIRST = Process(PROGRAM, COMMAND_LINE)  # the file being traced
STDIN_TEXT = b"yes\r\nhello world\r\n1\r\n"


def encode(text: str, wide: bool) -> bytes:
    return (text + "\0").encode("utf-16-le" if wide else "latin-1")


def command_line_text(wide: bool, command_line: str = COMMAND_LINE) -> bytes:
    return encode(command_line, wide)


def empty_environment(ptr_size: int) -> bytes:
    """An environment array holding a single NULL (and a spare one)."""
    return b"\0" * ptr_size * 2


def argv_array(base: int, ptr_size: int, wide: bool, command_line: str = COMMAND_LINE) -> bytes:
    """`argv` as it lies in memory at `base`: the NULL-terminated pointer array, then the strings."""
    strings = [encode(arg, wide) for arg in arguments(command_line)]
    address = base + ptr_size * (len(strings) + 1)
    pointers = []
    for s in strings:
        pointers.append(address.to_bytes(ptr_size, "little"))
        address += len(s)
    return b"".join(pointers) + b"\0" * ptr_size + b"".join(strings)


class StandardInput:
    """The bytes a program reads from its standard input handle, in order, then end of file."""

    def __init__(self) -> None:
        self._left = STDIN_TEXT

    def read(self, n: int) -> bytes:
        data, self._left = self._left[:n], self._left[n:]
        return data
