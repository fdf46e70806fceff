"""The fast free-range search (trace/emulate/memranges.py) gives Speakeasy's answers."""

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtrace.trace.emulate import (
    memranges,
    speakeasy_loader,  # noqa: F401  (imports speakeasy without setuptools)
)

PAGE = 0x1000
original = memranges.memmgr.MemoryManager.get_valid_ranges
original = getattr(original, "original", original)


def _manager(regions, reserves):
    return SimpleNamespace(
        page_size=PAGE,
        get_mem_regions=lambda: [(b, b + n * PAGE - 1, 7) for b, n in regions],
        mem_reserves=[SimpleNamespace(base=b, size=s) for b, s in reserves],
    )


layouts = st.tuples(
    st.lists(st.tuples(st.integers(0, 0x400).map(lambda p: p * PAGE), st.integers(1, 64)), max_size=12),
    st.lists(st.tuples(st.integers(0, 0x400 * PAGE), st.integers(1, 0x30000)), max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(layouts, st.integers(1, 0x40000), st.one_of(st.none(), st.integers(0, 0x420 * PAGE)))
def test_same_answer_as_speakeasy(layout, size, addr):
    manager = _manager(*layout)
    # Without a wanted address the search starts at 64 KiB (Speakeasy's at 4 KiB).
    wanted = memranges.LOWEST_ALLOCATION if addr is None else addr
    assert memranges.get_valid_ranges(manager, size, addr) == original(manager, size, wanted)


def test_a_crowded_space_steps_like_speakeasy_and_fails_alike():
    manager = _manager([(0, 0x10000)], [])  # the first 256 MiB mapped: 700 steps of the search
    assert memranges.get_valid_ranges(manager, 0x2000, 0x1000) == original(manager, 0x2000, 0x1000)
    everything = _manager([(0, 1 << 40)], [])  # (too big for the original's page set)
    with pytest.raises(Exception, match="Failed to allocate emulator memory"):
        memranges.get_valid_ranges(everything, PAGE, PAGE)


def test_install_is_idempotent():
    memranges.install()
    memranges.install()
    assert memranges.memmgr.MemoryManager.get_valid_ranges is memranges.get_valid_ranges
