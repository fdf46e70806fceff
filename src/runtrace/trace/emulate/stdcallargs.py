"""How many bytes of arguments an x86 stdcall API pops, for APIs the emulator has no handler for.

A stdcall callee pops its own arguments (`ret 8`).  The tracer's stub for an API without a handler used
to pop none, its signature being unknown, so the caller went on with its stack pointer off by the
arguments' size: a function with a frame pointer recovers at its epilogue, one without returns through
the wrong slot and faults.  Over the era corpus at revision 20, `WININET.HttpAddRequestHeadersA` (16
bytes) alone preceded 33 faults of malware runs that ended under 1,000 API calls.

The sizes come from MinGW-w64's i386 import libraries (`_SetFileAttributesA@8`), as Debian packages them
(`scripts/make_stdcall_table.py`, `data/stdcall/PROVENANCE.md`): 26,000 APIs of 390 DLLs.  The table is
read the first time a run meets a stub, not in every tracer start.
"""

from __future__ import annotations

import functools
import gzip

from runtrace.paths import data_dir

TABLE = data_dir() / "stdcall" / "arguments.tsv.gz"


@functools.cache
def _text() -> bytes:
    # Searched, not parsed: building a dict of the 26,000 lines costs about 20 ms of a one-file scan,
    # one search about 0.1 ms, and a program meets a few dozen distinct stubs at most.
    return b"\n" + gzip.decompress(TABLE.read_bytes())


@functools.cache
def _size(key: str) -> int | None:
    if "\t" in key or "\n" in key:  # names come from the program's imports: not a line of the table
        return None
    text = _text()
    needle = b"\n" + key.encode("ascii", "replace") + b"\t"
    at = text.find(needle)
    if at < 0:
        return None
    start = at + len(needle)
    return int(text[start : text.index(b"\n", start)])


def popped_bytes(dll: str, name: str) -> int | None:
    """The bytes of arguments `dll!name` pops as stdcall, None where the table does not know it.  The
    DLL is the program's spelling (`KERNEL32`, `kernel32.dll`); a name the libraries declare with
    different sizes in different DLLs is looked up for this one."""
    size = _size(name)
    if size is not None:
        return size
    return _size(f"{dll.lower().removesuffix('.dll')}!{name}")
