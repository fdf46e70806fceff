"""Every trace file format behind a few calls: `detect_format`, `load_any`, `save_as`.

Each format module registers itself (`register(TraceFormat(...))` at its end) with a name, the file
extensions that name it, a content probe, a reader and, where runtrace can write it, a writer.  The
package's `__init__` imports every format module, so a new format is one new module plus its import.

Detection, used alike by `show`, `convert`, `scan` and dataset building:
1. an extension that names a format outright (`.rtrace`, `.trace32`, `.trace64`);
2. the first format whose probe accepts the content (x64dbg's `TRAC` magic, a zip holding a runtrace
   trace, text that sniffs as an x64dbg or OllyDbg log), in registration order;
3. an extension that only hints at a format (`.txt`, `.log`: read as a text log, so the reader can say
   line by line what is wrong with it).

Every reading problem is a `TraceReadError` whose message is one line naming the file and the byte
offset or line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtrace.trace.errors import TraceReadError
from runtrace.trace.model import Trace

__all__ = [
    "TraceFormat",
    "TraceReadError",
    "detect_format",
    "format_for_output",
    "left_out",
    "load_any",
    "named_format",
    "read_formats",
    "register",
    "save_as",
    "sniff_format",
    "write_formats",
]

HEAD_BYTES = 4


@dataclass(frozen=True)
class TraceFormat:
    name: str
    read: Callable[[Path, bool], Trace]  # (path, allow_truncated) -> trace; raises TraceReadError
    write: Callable[[Trace, Path], Path] | None = None  # ValueError when the trace cannot be expressed
    suffixes: tuple[str, ...] = ()  # extensions that name this format, for reading and writing
    hint_suffixes: tuple[str, ...] = ()  # extensions tried only after every probe said no
    probe: Callable[[Path, bytes], bool] | None = None  # (path, first bytes) -> is it this format?
    # (path, regex, allow_truncated) -> trace: reads lines with a user's regex (text logs only)
    read_pattern: Callable[[Path, str, bool], Trace] | None = None
    # Whether a written file keeps the trace's API calls (name, arguments, result, return address): a
    # conversion to a format that does not says how many calls it leaves out.
    keeps_api_calls: bool = False


_FORMATS: dict[str, TraceFormat] = {}


def register(fmt: TraceFormat) -> TraceFormat:
    if fmt.name in _FORMATS:
        raise ValueError(f"trace format {fmt.name!r} registered twice")
    _FORMATS[fmt.name] = fmt
    return fmt


def read_formats() -> tuple[str, ...]:
    return tuple(_FORMATS)


def write_formats() -> tuple[str, ...]:
    return tuple(name for name, fmt in _FORMATS.items() if fmt.write is not None)


def named_format(path: str | Path) -> TraceFormat | None:
    """The format the file's extension names outright, if any."""
    suffix = Path(path).suffix.lower()
    return next((f for f in _FORMATS.values() if suffix in f.suffixes), None)


def _probe(fmt: TraceFormat, path: Path, head: bytes) -> bool:
    try:
        return fmt.probe is not None and fmt.probe(path, head)
    except (OSError, ValueError, UnicodeError):
        return False  # a file a probe cannot read is not that format; the reader says why if asked


def sniff_format(path: str | Path, name: str | None = None) -> TraceFormat | None:
    """The file's format by extension and content, or None when it is no trace runtrace knows.  The
    extension is `name`'s when given (a file stored under another name, as the service stores uploads).

    Raises OSError when the file cannot be opened."""
    path = Path(path)
    named = named_format(name or path)
    if named is not None:
        return named
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    for fmt in _FORMATS.values():
        if _probe(fmt, path, head):
            return fmt
    suffix = Path(name or path).suffix.lower()
    return next((f for f in _FORMATS.values() if suffix in f.hint_suffixes), None)


def detect_format(path: str | Path, name: str | None = None) -> str:
    """The name of the file's format; TraceReadError when it is none runtrace knows."""
    try:
        fmt = sniff_format(path, name)
    except OSError as e:
        raise TraceReadError(f"{path}: cannot open ({e.strerror or e})") from None
    if fmt is None:
        raise TraceReadError(f"{path}: byte 0: not a trace file runtrace knows ({_known()})")
    return fmt.name


def _known() -> str:
    return ", ".join(_FORMATS)


def _get(name: str, role: str) -> TraceFormat:
    fmt = _FORMATS.get(name)
    if fmt is None or (role == "output" and fmt.write is None):
        names = read_formats() if role == "trace" else write_formats()
        raise ValueError(f"unknown {role} format {name!r} (one of {', '.join(names)})")
    return fmt


def load_any(
    path: str | Path,
    fmt: str | None = None,
    allow_truncated: bool = False,
    line_pattern: str | None = None,
    name: str | None = None,
) -> Trace:
    """Read a trace of any registered format (detected unless fmt is given; by `name`'s extension
    when the file is stored under another name).

    allow_truncated keeps the readable prefix of a damaged debugger trace instead of failing;
    line_pattern reads a text log with a custom regex (named groups address, instruction, optionally
    thread).
    """
    path = Path(path)
    chosen = _get(fmt, "trace") if fmt is not None else None
    if line_pattern:
        reader = chosen or next((f for f in _FORMATS.values() if f.read_pattern is not None), None)
        if reader is None or reader.read_pattern is None:
            raise ValueError(f"a line pattern reads text logs, not {fmt} traces")
        return reader.read_pattern(path, line_pattern, allow_truncated)
    chosen = chosen or _get(detect_format(path, name), "trace")
    try:
        return chosen.read(path, allow_truncated)
    except OSError as e:
        raise TraceReadError(f"{path}: cannot read ({e.strerror or e})") from None


def save_as(trace: Trace, path: str | Path, fmt: str) -> Path:
    """Write in fmt (see write_formats()); ValueError when the trace cannot be expressed in it."""
    return _get(fmt, "output").write(trace, Path(path))


def left_out(trace: Trace, fmt: str) -> str | None:
    """What writing the trace in fmt leaves out, in words; None when nothing is."""
    if _get(fmt, "output").keeps_api_calls or not trace.api_calls:
        return None
    n = len(trace.api_calls)
    return f"{fmt} files hold no API calls: the trace's {n:,} call{'s' if n != 1 else ''} are not written"


def format_for_output(path: str | Path) -> str:
    """The write format an output file name implies (native unless it names another format)."""
    suffix = Path(path).suffix.lower()
    for fmt in _FORMATS.values():
        if fmt.write is not None and suffix in (*fmt.suffixes, *fmt.hint_suffixes):
            return fmt.name
    return "native"
