"""Every trace file format behind two calls: `load_any` and `save_as`.

| format        | files                    | read | write |
| ------------- | ------------------------ | ---- | ----- |
| `native`      | `.rtrace` (zip)          | yes  | yes   |
| `x64dbg`      | `.trace32` / `.trace64`  | yes  | yes   |
| `x64dbg-text` | `.txt` / `.log`          | yes  | yes (`text`) |
| `ollydbg`     | `.txt` / `.log`          | yes  | no    |

`text` as a read format means "a text log, sniff which"; as a write format, the x64dbg-style log.
Detection looks at the extension first, then at the first bytes (`TRAC`, a zip header, or text).
Every reading problem is a `TraceReadError` whose message is one line naming the file and the byte
offset or line.
"""

from __future__ import annotations

from pathlib import Path

from runtrace.trace.errors import TraceReadError
from runtrace.trace.formats.native import SUFFIX as NATIVE_SUFFIX
from runtrace.trace.formats.native import TraceFormatError, load_trace, save_trace
from runtrace.trace.formats.textlog import TEXT_FORMATS, read_text_log, sniff_text_format, write_text_log
from runtrace.trace.formats.x64dbg import MAGIC, SUFFIXES, read_x64dbg, write_x64dbg
from runtrace.trace.model import Trace

__all__ = ["READ_FORMATS", "WRITE_FORMATS", "TraceReadError", "detect_format", "load_any", "save_as"]

READ_FORMATS = ("native", "x64dbg", "text", *TEXT_FORMATS)
WRITE_FORMATS = ("native", "x64dbg", "text")
TEXT_SUFFIXES = (".txt", ".log")
_ZIP_MAGIC = b"PK\x03\x04"


def detect_format(path: str | Path) -> str:
    """ "native", "x64dbg", "x64dbg-text" or "ollydbg"; TraceReadError when it is none of them."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == NATIVE_SUFFIX:
        return "native"
    if suffix in SUFFIXES:
        return "x64dbg"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as e:
        raise TraceReadError(f"{path}: cannot open ({e.strerror or e})") from None
    if head == MAGIC:
        return "x64dbg"
    if head == _ZIP_MAGIC:
        return "native"
    text = sniff_text_format(path)
    if text is not None:
        return text
    if suffix in TEXT_SUFFIXES:
        return "x64dbg-text"  # let the reader say what is wrong with it, line by line
    raise TraceReadError(
        f"{path}: byte 0: not a trace file runtrace knows (.rtrace, x64dbg .trace32/.trace64, "
        "x64dbg or OllyDbg text log); name the format with --from"
    )


def load_any(
    path: str | Path, fmt: str | None = None, allow_truncated: bool = False, line_pattern: str | None = None
) -> Trace:
    """Read a trace of any supported format (detected unless fmt is given).

    allow_truncated keeps the readable prefix of a damaged debugger trace instead of failing;
    line_pattern reads a text log with a custom regex (named groups address, instruction, optionally
    thread).
    """
    path = Path(path)
    if fmt is not None and fmt not in READ_FORMATS:
        raise ValueError(f"unknown trace format {fmt!r} (one of {', '.join(READ_FORMATS)})")
    if line_pattern:
        if fmt not in (None, "text", *TEXT_FORMATS):
            raise ValueError(f"a line pattern reads text logs, not {fmt} traces")
        return read_text_log(path, line_pattern=line_pattern, allow_truncated=allow_truncated)
    fmt = fmt or detect_format(path)
    if fmt == "native":
        try:
            return load_trace(path)
        except TraceFormatError as e:
            raise TraceReadError(str(e)) from None
        except OSError as e:
            raise TraceReadError(f"{path}: cannot read ({e.strerror or e})") from None
    if fmt == "x64dbg":
        return read_x64dbg(path, allow_truncated=allow_truncated)
    return read_text_log(path, None if fmt == "text" else fmt, allow_truncated=allow_truncated)


def save_as(trace: Trace, path: str | Path, fmt: str) -> Path:
    """Write in fmt ("native", "x64dbg", "text"); ValueError when the trace cannot be expressed in it."""
    if fmt == "native":
        return save_trace(trace, path)
    if fmt == "x64dbg":
        return write_x64dbg(trace, path)
    if fmt == "text":
        return write_text_log(trace, path)
    raise ValueError(f"unknown output format {fmt!r} (one of {', '.join(WRITE_FORMATS)})")


def format_for_output(path: str | Path) -> str:
    """The write format an output file name implies (native unless it names a debugger format)."""
    suffix = Path(path).suffix.lower()
    if suffix in SUFFIXES:
        return "x64dbg"
    if suffix in TEXT_SUFFIXES:
        return "text"
    return "native"
