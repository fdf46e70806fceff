"""Sorting command-line paths into things to emulate and trace files to read.

`runtrace scan` takes PE files, directories, zip archives and existing traces alike.  A trace file is
recognised before anything else, because the native `.rtrace` format is itself a zip archive and would
otherwise be opened as an archive of samples:

1. an extension that names a trace format (`.rtrace`, `.trace32`, `.trace64`) -> trace;
2. `MZ` at byte 0 -> PE sample, whatever the name;
3. whatever the trace-format registry recognises by content (x64dbg's magic, a zip holding a runtrace
   trace, a text log) or by a text extension (`.txt`, `.log`) -> trace; any other zip is an archive
   of samples (`--password` opens encrypted ones);
4. anything else -> sample, and the tracer says in one line what it is not.

Directories are walked in sorted order with the same rules for each file.  Bad paths never raise: they
become `InputProblem`s and the batch goes on.  The size limit holds for trace files too (the scanner
loads them in its own process), checked from the file's size before anything is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
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
from runtrace.trace.emulate.pe import is_pe_file
from runtrace.trace.formats.registry import named_format, sniff_format


@dataclass(frozen=True)
class TraceFile:
    path: Path
    name: str = ""  # what results call it (default: the path)

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", str(self.path))


ScanInput = Sample | InputProblem | TraceFile


def is_trace_file(path: Path, name: str | None = None) -> bool:
    """Whether the file is a run trace rather than a sample; by `name`'s extension when given."""
    if named_format(name or path) is not None:
        return True
    try:
        if is_pe_file(path):
            return False
        return sniff_format(path, name) is not None
    except OSError:
        return False  # the sample reader reports why it cannot be read


def scan_input(path: Path, name: str) -> ScanInput:
    """One stored file as `runtrace scan NAME` would see a file of that name and these bytes: sorted by
    the name's extension and the content, and named `name` in results and messages (the service keeps
    uploads by sha256 and scans them under their upload's name)."""
    if is_trace_file(path, name):
        return TraceFile(path, name)
    items = list(iter_samples([path]))
    return replace(items[0], name=name) if items else InputProblem(name, "no such file")


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
