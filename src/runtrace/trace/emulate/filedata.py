"""File contents in Speakeasy's emulated file system: copies, writes, and the record of both.

Speakeasy's `CopyFile` creates an empty file at the destination; here `CopyFile` and `MoveFile`
(`sysapi`'s) copy the contents with `copy_contents`.  A program that installs itself copies its own
file somewhere else and starts the copy (`processes.py`): the copy must hold the program's bytes.
Paths are compared as Windows compares them: without case, with runs of backslashes read as one
(`C:\\Windows\\temp\\\\svchost.exe`, a concatenation that Windows accepts, is the file
`C:\\Windows\\temp\\svchost.exe`).

Speakeasy's `WriteFile` kept, for its report, every byte written to a file as one growing string (each
write copied all of it again) and formatted the whole buffer as hex to show its first 16 bytes: a
program writing its payload in 3,000 pieces spent 9 of 10 seconds there (tracer revision 22), so runs
timed out that were making progress.  It also left the count of bytes written unset, which a program
checks.  Here a write appends to the file (Speakeasy's semantics) and the record keeps the path and the
size; runtrace reads no more of it (`behaviour.py`).
"""

from __future__ import annotations

import ntpath
import re
from collections.abc import Callable

from speakeasy.const import FILE_CREATE, FILE_WRITE
from speakeasy.profiler import Profiler
from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate import registry

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


def is_folder(emu, path: str) -> bool:
    """A folder the run knows: one holding an emulated file, the user's profile, or a folder the
    environment names (`windir`, `temp`, `appdata`, ...), or one above them."""
    key = path_key(path).rstrip("\\")
    known = {path_key(registry.PROFILE)}
    known |= {path_key(v).rstrip("\\") for v in emu.get_env().values() if ":\\" in str(v)}
    if key in known or any(k.startswith(key + "\\") for k in known):
        return True
    for f in emu.fileman.files:
        folder = ntpath.dirname(path_key(f.get_path()))
        if folder == key or folder.startswith(key + "\\"):
            return True
    return False


def exists(emu, path: str) -> bool:
    """A file or a folder of the run at `path`."""
    return bool(path) and (file_bytes(emu.fileman, path) is not None or is_folder(emu, path))


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
        if not copy_contents(emu, source, target):
            emu.set_last_error(ERROR_FILE_NOT_FOUND)
            return 0
        return 1


def copy_contents(emu, source: str, target: str) -> bool:
    """Give the file `target` the contents of `source` (`CopyFile`, `MoveFile`); False when there is no
    `source`.  A copy onto itself changes nothing."""
    fileman = emu.fileman
    data = file_bytes(fileman, source)
    if data is None:
        return False
    if path_key(source) != path_key(target):
        fileman.create_file(target).add_data(data)
        handlers = emu.api.load_api_handler("kernel32")
        handlers.log_file_access(target, FILE_CREATE)
        handlers.log_file_access(target, FILE_WRITE, size=len(data))
    return True


def remove_file(fileman, path: str) -> None:
    """Delete the emulated file at `path` (Windows path comparison); nothing when there is none."""
    f = find_file(fileman, path)
    if f is not None:
        fileman.files.remove(f)


def write_file(emu, api_name: str, orig, argv: list) -> int:
    """WriteFile(hFile, lpBuffer, nNumberOfBytesToWrite, lpNumberOfBytesWritten, lpOverlapped) to an
    emulated file; any other handle (a pipe, a console) is Speakeasy's."""
    handle, buffer, size, written_at = argv[:4]
    f = emu.fileman.get_file_from_handle(handle)
    if f is None:
        return orig(argv) if orig is not None else 0
    data = bytes(emu.mem_read(buffer, size)) if size else b""
    f.add_data(data)
    emu.api.load_api_handler("kernel32").log_file_access(f.get_path(), FILE_WRITE, size=len(data))
    argv[1] = f"{buffer:#x} ({data[:16].hex()})"  # Speakeasy's spelling: the buffer and its first bytes
    if written_at:
        emu.mem_write(written_at, len(data).to_bytes(4, "little"))
    emu.set_last_error(0)
    return 1


def install() -> None:
    """Speakeasy's record of file access without the data (idempotent; see the module docstring)."""
    if getattr(Profiler.log_file_access, "runtrace", False):
        return

    def log_file_access(self, run, path, event_type, data=None, handle=0, disposition=(), access=(),
                        buffer=0, size=None):  # fmt: skip
        if event_type in ("write", "read"):
            for event in run.file_access:  # one event per path and kind, its sizes summed
                if event.get("path") == path and event.get("event") == event_type:
                    event["size"] = event.get("size", 0) + (size or 0)
                    return
        event = {"event": event_type, "path": path}
        if handle:
            event["handle"] = handle
        if size is not None:
            event["size"] = size
        if disposition:
            event["open_flags"] = list(disposition)
        if access:
            event["access_flags"] = list(access)
        if event not in run.file_access:
            run.file_access.append(event)

    log_file_access.runtrace = True
    Profiler.log_file_access = log_file_access
