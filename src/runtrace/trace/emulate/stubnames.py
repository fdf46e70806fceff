"""What a stubbed export of a DLL the emulator does not have returns, read from its name.

A stub returns 0.  For an allocator that is NULL, and the program writes through it at once: a program
built on the Boehm collector (`libgc`'s `GC_malloc`, a missing DLL) faulted on its first object and
ended in its unhandled-exception path.  An export whose name has an allocator's word (`malloc`,
`calloc`, `realloc`, `alloc`, `allocate`, as a word split at underscores and case changes:
`GC_malloc`, `GC_malloc_atomic`, `xmalloc`, `mem_alloc`, `AllocBuffer`; not when another word says it
frees, sizes or queries: `GC_free`, `GC_get_heap_size`) gets a fresh zeroed block, sized from its
first argument when that is a plausible size and 4 KiB otherwise.  Other names still get 0; C++
mangled names are left to the hosts that know them.
"""

from __future__ import annotations

import re

from speakeasy.winenv.arch import CALL_CONV_CDECL

_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_ALLOCATING = {"malloc", "calloc", "realloc", "xmalloc", "xcalloc", "xrealloc", "alloc", "allocate"}
_NOT_ALLOCATING = {"free", "size", "count", "stat", "stats", "get", "set", "query", "hook", "handler", "is"}
MAX_BLOCK = 1 << 20
DEFAULT_BLOCK = 0x1000


def is_allocator(name: str) -> bool:
    if name.startswith("?"):
        return False
    words = {w.lower() for w in _WORDS.findall(name)}
    return bool(words & _ALLOCATING) and not words & _NOT_ALLOCATING


def value(emu, name: str) -> int:
    """The stub's return value: a block for an allocator, else 0."""
    if not is_allocator(name):
        return 0
    try:
        (size,) = emu.get_func_argv(CALL_CONV_CDECL, 1)  # the first argument, either convention
    except Exception:
        size = 0
    size = size if 0 < size <= MAX_BLOCK else DEFAULT_BLOCK
    try:
        return emu.mem_map(size, tag=f"runtrace.stub_alloc.{name}")
    except Exception:
        return 0


# pywin32's DLLs (pythoncomXY, pywintypesXY) export C++ functions under Visual C++ mangled names,
# `?Name@@Y<convention><return type><parameters>@Z`; the return type says what a stub should answer:
# `int` (BOOL is an int) is a status, 0 for success as in Python's C API, except the `PyWinObject_As*`
# / `PyWin*_As*` converters, whose int is a BOOL, TRUE for success; C++ `bool` is true; `void` 0; a
# pointer an object from the Python host.  Before, a pythoncom stub returned an object pointer where
# `PyCom_RegisterClientType` returns 0, and a pywintypes converter 0 (FALSE), so module set-up failed.
_MANGLED = re.compile(r"^\?(?P<name>[A-Za-z_]\w*)@@Y[A-Z](?P<ret>_N|[A-Z])")
_INTEGERS = set("CDEFGHIJK")  # signed/unsigned char, short, int, long
_CONVERTER = re.compile(r"^PyWin\w*?_As[A-Z]")


def is_pywin32(dll: str, name: str) -> bool:
    return name.startswith("?") and dll.lower().startswith(("python", "pywintypes"))


def cpp_value(name: str, object_value) -> int:
    """A stub's answer for a mangled C++ export; `object_value(name)` gives an object pointer."""
    match = _MANGLED.match(name)
    if match is None:
        return object_value(name)
    ret = match["ret"]
    if ret == "_N":
        return 1
    if ret == "X":
        return 0
    if ret in _INTEGERS:
        return 1 if _CONVERTER.match(match["name"]) else 0
    return object_value(name)
