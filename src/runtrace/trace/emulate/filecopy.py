"""Copying and moving files in Speakeasy's emulated file system, with their contents.

Speakeasy's `CopyFile` creates an empty file at the destination (`MoveFile` is `sysapi`'s, which moves
the contents).  A program that installs itself copies its own file somewhere else and starts the copy
(`processes.py`): the copy must hold the program's bytes to be run.  Paths are compared as Windows
compares them: without case, with runs of backslashes read as one (`C:\\Windows\\temp\\\\svchost.exe`,
a concatenation that Windows accepts, is the file `C:\\Windows\\temp\\svchost.exe`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from speakeasy.const import FILE_CREATE, FILE_WRITE
from speakeasy.winenv import arch as se_arch

STDCALL = se_arch.CALL_CONV_STDCALL
ERROR_FILE_NOT_FOUND = 2
_SEPARATORS = re.compile(r"[\\/]+")


def clean_path(path: str) -> str:
    """`path` with runs of separators as one backslash, as Windows names the file it opens."""
    path = path.strip().strip('"').strip()
    prefix = "\\\\" if path.startswith("\\\\") else ""  # a UNC or device path keeps its leading pair
    return prefix + _SEPARATORS.sub(r"\\", path[len(prefix) :])


def path_key(path: str) -> str:
    """How Windows tells two spellings of one path apart: it does not (case, repeated separators,
    surrounding quotes and spaces)."""
    return clean_path(path).lower()


def find_file(fileman, path: str):
    """The emulated file at `path` that the run created or was given (Speakeasy's `File`), or None."""
    key = path_key(path)
    for f in reversed(fileman.files):  # the latest file of a path wins, as Speakeasy's create replaces
        if path_key(f.get_path()) == key:
            return f
    return None


def file_bytes(fileman, path: str) -> bytes | None:
    """The contents of an emulated file: one the run has (its own image, one it wrote, one it opened),
    else the stand-in Speakeasy's configuration serves for that path; None when neither exists."""
    f = find_file(fileman, path)
    if f is not None:
        if f.data is not None:
            return f.data.getvalue()  # all of it, wherever a reader left the file's offset
        return (fileman.handle_file_data(f.config) or b"") if f.config else b""
    config = fileman.get_emu_file(path)
    if not config:
        return None
    return fileman.handle_file_data(config) or b""


class FileCopies:
    """`CopyFile` and `CopyFileEx`, A and W, over Speakeasy's emulated files."""

    def __init__(self, se) -> None:
        self.se = se

    def overriding(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """(modules, name, argc, convention, fn(argv)): Speakeasy's `CopyFile` copies no contents."""
        k32 = ("kernel32", "kernelbase")
        out = []
        for suffix, wide in (("A", False), ("W", True)):
            out += [
                (k32, f"CopyFile{suffix}", 3, STDCALL, lambda a, w=wide: self.copy(a, w)),
                (k32, f"CopyFileEx{suffix}", 6, STDCALL, lambda a, w=wide: self.copy(a, w)),
            ]
        return out

    def copy(self, argv: list, wide: bool) -> int:
        emu = self.se.emu
        if not argv[0] or not argv[1]:
            emu.set_last_error(ERROR_FILE_NOT_FOUND)
            return 0
        source = emu.read_mem_string(argv[0], 2 if wide else 1)
        target = emu.read_mem_string(argv[1], 2 if wide else 1)
        argv[0], argv[1] = source, target  # the paths, not their addresses, go into the trace
        fileman = emu.fileman
        data = file_bytes(fileman, source)
        if data is None:
            emu.set_last_error(ERROR_FILE_NOT_FOUND)
            return 0
        if path_key(source) == path_key(target):
            return 1
        fileman.create_file(target).add_data(data)
        handlers = emu.api.load_api_handler("kernel32")
        handlers.log_file_access(target, FILE_CREATE)
        # With its data, as Speakeasy's WriteFile logs a write (a later write to the file adds to both).
        handlers.log_file_access(target, FILE_WRITE, data=data, size=len(data))
        return 1
