"""Sorting command-line paths into things to emulate and trace files to read.

`runtrace scan` takes PE files, directories, zip archives and existing traces alike.  A trace file is
recognised before anything else, because the native `.rtrace` format is itself a zip archive and would
otherwise be opened as an archive of samples:

1. a trace extension (`.rtrace`, `.trace32`, `.trace64`) -> trace;
2. `MZ` at byte 0 -> PE sample, whatever the name;
3. x64dbg's `TRAC` magic -> trace;
4. a zip whose members are a runtrace trace (`header.npy` and `visits.npy`) -> trace; any other zip is
   an archive of samples (`--password` opens encrypted ones);
5. `.txt` / `.log`, or text that sniffs as an x64dbg or OllyDbg log -> trace;
6. anything else -> sample, and the tracer says in one line what it is not.

Directories are walked in sorted order with the same rules for each file.  Bad paths never raise: they
become `InputProblem`s and the batch goes on.  The size limit holds for trace files too (the scanner
loads them in its own process), checked from the file's size before anything is read.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runtrace.trace.emulate.inputs import (
    DEFAULT_MAX_FILE_MB,
    MIB,
    InputProblem,
    Sample,
    iter_samples,
    too_large,
    walk,
)

TRACE_SUFFIXES = (".rtrace", ".trace32", ".trace64")
TEXT_SUFFIXES = (".txt", ".log")
NATIVE_TRACE_MEMBERS = {"header.npy", "visits.npy"}


@dataclass(frozen=True)
class TraceFile:
    path: Path

    @property
    def name(self) -> str:
        return str(self.path)


ScanInput = Sample | InputProblem | TraceFile


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(4)


def is_trace_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in TRACE_SUFFIXES:
        return True
    try:
        head = _head(path)
    except OSError:
        return False  # the sample reader reports why it cannot be read
    if head[:2] == b"MZ":
        return False
    if head == b"TRAC":
        return True
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                return set(archive.namelist()) >= NATIVE_TRACE_MEMBERS
        except (OSError, zipfile.BadZipFile):
            return False
    if suffix in TEXT_SUFFIXES:
        return True
    return _sniffs_as_text_log(path)


def _sniffs_as_text_log(path: Path) -> bool:
    try:
        from runtrace.trace.formats.textlog import sniff_text_format

        return sniff_text_format(path) is not None
    except (OSError, ValueError, UnicodeError):
        return False


def iter_inputs(
    paths: list[Path], password: str | None = None, max_bytes: int | None = DEFAULT_MAX_FILE_MB * MIB
) -> Iterator[ScanInput]:
    """Every input in argument order (directories sorted), as a sample, a trace file or a problem.

    Files over `max_bytes` (None: no limit) are problems, found without reading them."""
    for item in walk(paths):
        if isinstance(item, InputProblem):
            yield item
        else:
            yield from _one(item, password, max_bytes)


def _one(path: Path, password: str | None, max_bytes: int | None) -> Iterator[ScanInput]:
    if is_trace_file(path):
        try:
            problem = too_large(path.stat().st_size, max_bytes)
        except OSError as e:
            problem = f"cannot read: {e.strerror or e}"
        yield InputProblem(str(path), problem) if problem else TraceFile(path)
    else:
        yield from iter_samples([path], password, max_bytes)
