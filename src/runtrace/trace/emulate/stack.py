"""The main thread's stack as large as Windows makes it.

Speakeasy gives the main thread a 0x12000-byte (72 KiB) stack whatever the image asks for.  Windows
reserves the EXE's `SizeOfStackReserve` (the linker's default is 1 MiB) and commits it a page at a
time as the guard page below the committed part is touched; a function with a large local array
probes its frame down a page at a time (`_chkstk`), so a program with 128 KiB of locals faulted just
below Speakeasy's stack.  Here the whole reserve is mapped at once: unicorn's mapped memory costs host
memory only when written, so the untouched part is free, and the memory cap still counts what the
program writes.  A DLL runs on its host's main thread, whose reserve is the default.

A reserve above `MAX_RESERVE` (some images ask for hundreds of MB) is cut to it: a 32-bit process's
address space would be crowded for no gain, since no program touches that much stack.
"""

from __future__ import annotations

import struct

SPEAKEASY_MAIN_STACK = 0x12000  # the size Speakeasy asks `alloc_stack` for, for a module's main thread
DEFAULT_RESERVE = 1 << 20
MAX_RESERVE = 64 << 20
_PAGE = 0x1000
_IMAGE_FILE_DLL = 0x2000


def main_stack_size(data: bytes) -> int:
    """The main thread's stack size for the image in `data` (headers already validated)."""
    try:
        (e_lfanew,) = struct.unpack_from("<I", data, 0x3C)
        (characteristics,) = struct.unpack_from("<H", data, e_lfanew + 22)
        optional = e_lfanew + 24
        (magic,) = struct.unpack_from("<H", data, optional)
        # SizeOfStackReserve: at 72 in a PE32 optional header (4 bytes), 72 in PE32+ (8 bytes).
        reserve = struct.unpack_from("<Q" if magic == 0x20B else "<I", data, optional + 72)[0]
    except struct.error:
        return DEFAULT_RESERVE
    if characteristics & _IMAGE_FILE_DLL or reserve == 0:
        return DEFAULT_RESERVE
    reserve = (reserve + _PAGE - 1) & ~(_PAGE - 1)
    return min(max(reserve, SPEAKEASY_MAIN_STACK), MAX_RESERVE)


def install(emu, size: int) -> None:
    """Make Speakeasy's request for a module's main-thread stack (`alloc_stack(0x12000)`) `size` bytes;
    its other stacks (shellcode runs) are left as they are."""
    original = emu.alloc_stack

    def alloc_stack(requested: int):
        return original(size if requested == SPEAKEASY_MAIN_STACK else requested)

    emu.alloc_stack = alloc_stack
