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


def test_pywin32_answers_follow_the_mangled_return_type():
    from runtrace.trace.emulate.stubnames import cpp_value, is_pywin32

    obj = lambda name: 0x5000  # noqa: E731  (the Python host's object)
    assert is_pywin32("pythoncom39", "?PyCom_RegisterClientType@@YAHPAU_typeobject@@PBU_GUID@@@Z")
    assert is_pywin32("PyWinTypes39", "?PyWinObject_AsIID@@YAHPAU_object@@PAU_GUID@@@Z")
    assert not is_pywin32("kernel32", "?x@@YAHXZ") and not is_pywin32("python39", "Py_Initialize")
    assert cpp_value("?PyCom_RegisterClientType@@YAHPAU_typeobject@@PBU_GUID@@@Z", obj) == 0  # status
    assert cpp_value("?PyWinObject_AsIID@@YAHPAU_object@@PAU_GUID@@@Z", obj) == 1  # a BOOL converter
    assert cpp_value("?PyWinLong_AsULONG_PTR@@YAHPEAU_object@@PEA_K@Z", obj) == 1
    assert cpp_value("?PyWinObject_FromIID@@YAPAU_object@@ABU_GUID@@@Z", obj) == 0x5000  # a pointer
    assert cpp_value("?PyWin_SetAPIError@@YAPAU_object@@PBDJ@Z", obj) == 0x5000
    assert cpp_value("?PyCom_LogF@@YAXPBDZZ", obj) == 0  # void
    assert cpp_value("?IsOK@@YA_NXZ", obj) == 1  # bool
