"""x86 stubs pop the stdcall arguments the import libraries declare (tracer revision 21)."""

import gzip

from emu_pe import Data, calls
from runtrace.trace.emulate import stdcallargs
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason


def test_sizes_of_known_apis():
    assert stdcallargs.popped_bytes("KERNEL32", "SetFileAttributesA") == 8
    assert stdcallargs.popped_bytes("wininet.dll", "HttpAddRequestHeadersA") == 16
    assert stdcallargs.popped_bytes("uxtheme", "IsThemeActive") == 0
    assert stdcallargs.popped_bytes("kernel32", "NoSuchApi") is None
    assert stdcallargs.popped_bytes("kernel32", "leep") is None  # a whole name, not the end of one
    assert stdcallargs.popped_bytes("kernel32", "Sleep\t4\nSleep") is None  # not a line of the table
    assert stdcallargs.popped_bytes("msvcrt", "printf") is None  # cdecl: no decorated size


def test_a_name_declared_with_different_sizes_is_looked_up_for_its_dll():
    text = gzip.decompress(stdcallargs.TABLE.read_bytes()).decode()
    rows = dict(line.split("\t") for line in text.splitlines())
    by_dll = {key: int(size) for key, size in rows.items() if "!" in key}
    key, size = next(iter(by_dll.items()))
    dll, name = key.split("!")
    assert name not in rows  # ambiguous names are only kept per DLL
    assert stdcallargs.popped_bytes(dll.upper() + ".DLL", name) == size
    assert stdcallargs.popped_bytes("another", name) is None


def test_a_program_goes_on_past_stdcall_apis_without_handlers():
    # No frame pointer: the program's final `ret` returns through whatever the stubs left on the stack.
    # Before the table, the 24 bytes of arguments stayed pushed and the run faulted there.
    trace = emulate(
        calls(
            [
                ("user32.dll!GetSystemMenu", [0, 0]),
                ("wininet.dll!HttpAddRequestHeadersA", [0, Data(0), 0xFFFFFFFF, 0x20000000]),
                ("kernel32.dll!Sleep", [7]),
            ]
        ),  # fmt: skip
        "x",
        "stdcall",
    )
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    names = [c.name for c in trace.api_calls]
    assert names[:2] == ["user32.GetSystemMenu", "wininet.HttpAddRequestHeadersA"]
    assert {e["name"] for e in trace.meta.events if e["type"] == "unsupported_api"} >= set(names[:2])
    assert [c.args[0] for c in trace.api_calls if c.name == "kernel32.Sleep"] == [7]


def test_every_line_of_the_table_is_found_as_written():
    text = gzip.decompress(stdcallargs.TABLE.read_bytes()).decode()
    for line in text.splitlines()[::97]:
        key, size = line.split("\t")
        dll, _, name = key.rpartition("!")
        assert stdcallargs.popped_bytes(dll or "any", name) == int(size)
