"""Stubbed exports of missing DLLs named as allocators return a zeroed block (stubnames.py)."""

from emu_pe import Data, Word, calls
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.emulate.stubnames import is_allocator
from runtrace.trace.model import StopReason


def test_allocator_names():
    for name in ("GC_malloc", "GC_malloc_atomic", "xmalloc", "mem_alloc", "AllocBuffer", "GC_debug_malloc"):
        assert is_allocator(name), name
    for name in (
        "GC_free",
        "GC_get_heap_size",
        "GC_init",
        "malloc_usable_size",
        "Allocator",
        "?alloc@@YAXXZ",
    ):
        assert not is_allocator(name), name


def test_a_missing_allocator_gives_a_block_the_program_can_use():
    trace = emulate(
        calls([
            ("libgc-1.dll!GC_malloc", [0x40], "cdecl", Data(0x100)),
            ("libgc-1.dll!GC_free", [Word(0x100)], "cdecl"),
            ("kernel32.dll!lstrcpyA", [Word(0x100), Data(0)]),
            ("kernel32.dll!lstrlenA", [Word(0x100)]),
        ], b"hello\0"),
        "x",
        "stubnames",
    )  # fmt: skip
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    by_name = {c.name: c for c in trace.api_calls}
    assert by_name["libgc-1.GC_malloc"].result >= 0x10000
    assert by_name["libgc-1.GC_free"].result == 0
    assert by_name["kernel32.lstrlenA"].args[0] == "hello" and by_name["kernel32.lstrlenA"].result == 5
