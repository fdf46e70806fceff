"""Heap blocks as Speakeasy keeps them: each allocation is a memory map of its own, with its size, so
`realloc`-style functions (the C runtime's, `CoTaskMemRealloc`) can copy what a block holds and free it.

A pointer that does not start an allocation (into the image, the stack, the middle of a block) is not
freed: Speakeasy's `mem_free` would release the whole map it lies in.
"""

from __future__ import annotations

from collections.abc import Callable


def allocation(emu, address: int):
    """Speakeasy's record of the allocation starting at `address`, or None."""
    mapping = emu.get_address_map(address) if address else None
    return mapping if mapping is not None and mapping.get_base() == address else None


def free(emu, address: int) -> None:
    if allocation(emu, address) is not None:
        emu.mem_free(address)


def reallocate(emu, block: int, size: int, alloc: Callable[[int], int]) -> int:
    """realloc(block, size): a new block from `alloc` holding the old one's bytes (as many as fit), the
    old one freed; NULL block: a plain allocation; size 0: freed, NULL."""
    if not block:
        return alloc(size)
    old = allocation(emu, block)
    if not size:
        free(emu, block)
        return 0
    new = alloc(size)
    keep = min(size, old.get_size()) if old is not None else 0
    if keep:
        emu.mem_write(new, bytes(emu.mem_read(block, keep)))
    free(emu, block)
    return new
