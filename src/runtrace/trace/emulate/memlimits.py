"""Guards on large reads and allocations whose size comes from the program, often from a value the
emulation made up (measured in docs/tracer.md):

- **Reads that cannot succeed.**  unicorn's `mem_read` allocates (and zeroes) a host buffer of the
  requested size before it asks the engine whether the range is mapped.  A Speakeasy API handler reads
  the program's buffer with the length the program passed, so `WriteFile(h, buf, 0xfffb0000, ...)` (a
  length computed from a stubbed API's result) cost 4 GiB of host memory to raise "read unmapped".
  Large reads are checked against the mapped regions first and raise the same error without the buffer.
- **Allocations a 32-bit process cannot address.**  In a 32-bit process Speakeasy
  placed large blocks past 4 GiB, where the program's truncated pointer lands on other memory.
  Windows fails such a request; so does this module: the API handler fails, the program gets NULL and
  takes its error path.

Other allocations are granted whatever their size: unicorn backs mapped memory only when it is
written, so a large block costs nothing until the program uses it, and a program that really writes
more than the memory cap is still stopped by it.  (A budget on live heap blocks was tried: over the
capa test files it fired once, on a 4 GiB block never written, and only cut that trace short.)
"""

from __future__ import annotations  # noqa: I001  (speakeasy_loader must come before unicorn)

from runtrace.trace.emulate import speakeasy_loader  # noqa: F401  (first: lean imports of unicorn)
from speakeasy.common import PERM_MEM_RWX
from unicorn import UC_ERR_READ_UNMAPPED, UcError

# Smaller reads and allocations are not checked: they cannot move the process's memory much, and
# checking every one would cost time on the hot path of API handlers.
CHECKED_SIZE = 1 << 20
ADDRESS_SPACE_32 = 1 << 32


def covered(regions, address: int, size: int) -> bool:
    """Whether every byte of [address, address + size) lies in `regions` (unicorn's, inclusive ends)."""
    end = address + size
    for begin, last, *_ in sorted(regions):
        if last < address:
            continue
        if begin > address:
            return False
        address = last + 1
        if address >= end:
            return True
    return address >= end


class AllocationRefused(MemoryError):
    """A program's allocation Windows would not grant here (the API returns NULL)."""


def install(emu, bits: int) -> None:
    """Guard one Speakeasy emulator's large reads and, in a 32-bit process, its large allocations."""
    engine = emu.emu_eng
    uc = engine.emu

    def mem_read(addr: int, size: int):
        if size > CHECKED_SIZE and not covered(uc.mem_regions(), addr, size):
            raise UcError(UC_ERR_READ_UNMAPPED)  # what unicorn raises, without its buffer first
        return uc.mem_read(addr, size)

    engine.mem_read = mem_read
    if bits != 32:
        return

    orig_map = emu.mem_map

    def mem_map(size, base=None, perms=PERM_MEM_RWX, tag=None, flags=0, shared=False, process=None):
        # (Speakeasy's signature, so that positional and keyword callers both keep working.)
        if size > CHECKED_SIZE and tag and tag.startswith("api."):
            start, total = emu.get_valid_ranges(size, addr=base)  # where Speakeasy would map it
            if start + total > ADDRESS_SPACE_32:
                raise AllocationRefused(f"{size:#x} bytes do not fit in a 32-bit address space")
        return orig_map(size, base, perms, tag, flags, shared, process)

    emu.mem_map = mem_map
