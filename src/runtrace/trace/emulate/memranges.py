"""Speakeasy's search for free emulated memory, with the same answers at a fraction of the cost.

`MemoryManager.get_valid_ranges` (every `mem_map` without a fixed address, every heap and virtual
allocation, every page Speakeasy maps for a faulting write) builds a Python set holding every mapped
and reserved *page* of the process and sorts it, per call.  With a few hundred MB mapped that is
0.1-0.2 s a call, and a program that touches a few dozen unmapped pages spent seconds there (measured
in `docs/tracer.md`).  This version keeps the same search (start address, step sizes, attempt limit,
page rounding) but tests candidates against the mapped and reserved ranges with a binary search.
`tests/test_memranges.py` checks it against the original on random memory layouts.

One difference on purpose: a search without a wanted address starts at 64 KiB, not at 4 KiB.  Windows
never maps the first 64 KiB, and programs rely on it: a value below 0x10000 passed as a name is an
integer resource id or atom (`IS_INTRESOURCE`, `MAKEINTATOM`), so a string Speakeasy had allocated at
0x5000 was read as resource number 0x5000.
"""

from __future__ import annotations

import bisect

from speakeasy import memmgr

_ATTEMPTS = 9999  # as Speakeasy
LOWEST_ALLOCATION = 0x10000


def occupied_pages(regions, reserves, page_size: int) -> tuple[list[int], list[int]]:
    """Merged [first, last) page-number intervals a new mapping must avoid, as two sorted lists."""
    spans = []
    for begin, end, *_ in regions:  # unicorn's regions: inclusive end
        # Speakeasy counts the page starts p with begin <= p < end.
        spans.append((-(-begin // page_size), -(-end // page_size)))
    for reserve in reserves:
        if reserve.base % page_size == 0:  # Speakeasy's page starts from an unaligned base never match
            first = reserve.base // page_size
            spans.append((first, first + -(-reserve.size // page_size)))
    spans.sort()
    starts: list[int] = []
    ends: list[int] = []
    for first, last in spans:
        if last <= first:
            continue
        if ends and first <= ends[-1]:
            ends[-1] = max(ends[-1], last)
        else:
            starts.append(first)
            ends.append(last)
    return starts, ends


def _free(starts: list[int], ends: list[int], first: int, last: int) -> bool:
    i = bisect.bisect_right(starts, last - 1) - 1  # the last interval starting before `last`
    return i < 0 or ends[i] <= first


def get_valid_ranges(self, size, addr=None):
    """Drop-in for `MemoryManager.get_valid_ranges`: (base, size rounded up to pages)."""
    page_size = self.page_size
    total = size
    if addr is None:
        addr = LOWEST_ALLOCATION
    base = addr - (addr % page_size)
    if total < page_size:
        total = page_size
    elif total % page_size:
        total += page_size - (total % page_size)

    starts, ends = occupied_pages(self.get_mem_regions(), self.mem_reserves, page_size)
    attempts = _ATTEMPTS
    while attempts:
        if _free(starts, ends, base // page_size, (base + total) // page_size):
            return base, total
        if not attempts % 10:
            base += page_size * 1000
        else:
            base += total
        attempts -= 1
    raise Exception("Failed to allocate emulator memory")  # Speakeasy's exception, unchanged


def install() -> None:
    """Replace Speakeasy's search (idempotent)."""
    if getattr(memmgr.MemoryManager.get_valid_ranges, "runtrace_fast", False):
        return
    get_valid_ranges.runtrace_fast = True
    get_valid_ranges.original = memmgr.MemoryManager.get_valid_ranges
    memmgr.MemoryManager.get_valid_ranges = get_valid_ranges
