"""The arguments every DLL export is called with.

Nothing says what an export's parameters are, so every export gets the same four pointers to pages just
above 64 KiB: valid for pointer parameters, and modest when read as an integer (a size or a count).
Speakeasy's own pointers near 0x41420000 read as a gigabyte, and exports failed their first allocation.

The fourth page starts with a pointer to a short linked list of strings, each node `{next, text}`.
That is the shape of the one widespread calling convention whose fourth parameter is a pointer to a
pointer: NSIS plug-ins (`func(hwndParent, string_size, variables, stack_t **stacktop, extra)`), which
pop their arguments from that list.  With an empty list every plug-in function returned at its first
pop.  The strings alternate the emulated document (a path that exists in the emulated file system)
and a small number, so a function popping a file name, a script, a count or a flag finds one; a file
comes first, as it does for most plug-in functions.  The texts are ANSI or UTF-16 by the image's
imports (more `...W` than `...A` functions: a Unicode build), never by the file's label or source.

A fifth argument is NSIS's `extra_parameters`: a pointer to zeroed execution flags and three
functions (run a script section, check a file name, register a callback) that return 0 and pop their
arguments as the stdcall functions they stand for; `Math::Script` registers its callback first thing,
and through a NULL pointer its stack ended misaligned.  An export with another signature finds
non-zero memory behind its fourth argument (still a valid pointer), and one with a fifth parameter
gets this pointer there instead of whatever the stack held.
"""

from __future__ import annotations

import struct

from runtrace.trace.emulate.startup import DOCUMENT

PAGE = 0x1000
ARG_COUNT = 4  # Speakeasy's, which these replace
# extra_parameters' functions and the bytes of each on x86 (stdcall: pops its arguments) and amd64.
_EXTRA_FUNCTIONS_X86 = (b"\x31\xc0\xc2\x08\x00", b"\x31\xc0\xc2\x04\x00", b"\x31\xc0\xc2\x08\x00")
_RETURN_0_AMD64 = b"\x31\xc0\xc3"
_EXEC_FLAGS_SIZE = 0x100  # exec_flags_t: a few dozen ints, all 0
STACK_STRINGS = (DOCUMENT, "2", DOCUMENT, "2", DOCUMENT, "2", DOCUMENT, "2")
NODE_SIZE = 0x200  # next pointer + text, well inside a page for any of the strings above


def prefers_wide(import_names) -> bool:
    """Whether an image is a Unicode build: it imports more `...W` than `...A` functions."""
    wide = sum(1 for n in import_names if n.endswith("W"))
    ansi = sum(1 for n in import_names if n.endswith("A"))
    return wide > ansi


def string_stack(base: int, ptr_size: int, wide: bool) -> bytes:
    """The nodes of the string list, laid out from `base`: each `{next, text}`, the last `next` NULL."""
    fmt = "<Q" if ptr_size == 8 else "<I"
    out = bytearray()
    for i, text in enumerate(STACK_STRINGS):
        nxt = base + (i + 1) * NODE_SIZE if i + 1 < len(STACK_STRINGS) else 0
        body = text.encode("utf-16-le") + b"\0\0" if wide else text.encode("ascii") + b"\0"
        node = struct.pack(fmt, nxt) + body
        out += node.ljust(NODE_SIZE, b"\0")
    return bytes(out)


def extra_parameters(base: int, ptr_size: int) -> bytes:
    """The page at `base`: the struct `{exec_flags*, fn, fn, fn}`, the functions' code, the flags."""
    codes = (_RETURN_0_AMD64,) * 3 if ptr_size == 8 else _EXTRA_FUNCTIONS_X86
    code_at, flags_at = base + 0x40, base + 0x80
    functions = [code_at + 8 * i for i in range(len(codes))]
    page = bytearray(PAGE)
    page[: 4 * ptr_size] = struct.pack("<4Q" if ptr_size == 8 else "<4I", flags_at, *functions)
    for address, code in zip(functions, codes, strict=True):
        page[address - base : address - base + len(code)] = code
    assert flags_at - base + _EXEC_FLAGS_SIZE <= PAGE
    return bytes(page)


class ExportArgs:
    """The argument pages of one emulation, mapped once; the string list is rebuilt for every export, as
    each plug-in call gets its own arguments (a popped node is gone, and the plug-in frees it)."""

    def __init__(self, emu, ptr_size: int, wide: bool) -> None:
        self.emu, self.ptr_size, self.wide = emu, ptr_size, wide
        self.pages = [emu.mem_map(PAGE, tag="runtrace.export_arg") for _ in range(ARG_COUNT)]
        size = -(-len(STACK_STRINGS) * NODE_SIZE // PAGE) * PAGE
        self.stack = emu.mem_map(size, tag="runtrace.export_arg_strings")
        self.extra = emu.mem_map(PAGE, tag="runtrace.export_arg_extra")  # executable: it holds code
        emu.mem_write(self.extra, extra_parameters(self.extra, ptr_size))

    @property
    def values(self) -> list[int]:
        return [*self.pages, self.extra]

    def reset(self) -> None:
        """Fresh strings before an export runs."""
        self.emu.mem_write(self.stack, string_stack(self.stack, self.ptr_size, self.wide))
        self.emu.mem_write(self.pages[3], struct.pack("<Q" if self.ptr_size == 8 else "<I", self.stack))
