"""APIs whose stubs kept programs in a loop until the time limit (tracer revision 25): the C runtime's
`_write` and `CharNextExA`."""

from __future__ import annotations

from emu_pe import Data, Word, ansi, calls, calls_by_name, data_area
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason


def test_writes_to_the_standard_streams_succeed_and_other_descriptors_are_not_open():
    trace = emulate(
        calls(
            [
                ("msvcrt.dll!_write", [1, Data(0), 5], "cdecl"),
                ("msvcrt.dll!_write", [2, Data(0), 0], "cdecl"),
                ("msvcrt.dll!_write", [9, Data(0), 5], "cdecl"),
            ],
            data_area((0, ansi("hello"))),
        ),
        "w",
        "write",
    )
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    results = [c.result for c in calls_by_name(trace)["msvcrt._write"]]
    assert results == [5, 0, 0xFFFFFFFF]  # the stub's 0 told the runtime nothing was written


def test_char_next_ex_and_char_prev_ex_step_one_byte_and_stop_at_the_ends():
    trace = emulate(
        calls(
            [
                ("user32.dll!CharNextExA", [0, Data(0x10), 0]),
                ("user32.dll!CharNextExA", [0, Data(0x12), 0]),  # on the NUL: stays
                ("user32.dll!CharPrevExA", [0, Data(0x10), Data(0x12), 0]),
                ("user32.dll!CharPrevExA", [0, Data(0x10), Data(0x10), 0]),  # at the start: the start
            ],
            data_area((0x10, ansi("ab"))),
        ),
        "c",
        "charnext",
    )
    by_name = calls_by_name(trace)
    start = by_name["user32.CharNextExA"][0].args[1]
    assert [c.result for c in by_name["user32.CharNextExA"]] == [start + 1, start + 2]
    assert [c.result for c in by_name["user32.CharPrevExA"]] == [start + 1, start]


def test_a_class_this_machine_lacks_is_not_registered_and_its_pointer_is_null():
    # {01234567-89AB-CDEF-0123-456789ABCDEF}: no such class; IID_IUnknown for the interface.
    unknown = bytes.fromhex("67452301ab89efcd0123456789abcdef")
    iunknown = bytes.fromhex("0000000000000000c000000000000046")
    trace = emulate(
        calls(
            [
                ("ole32.dll!CoInitialize", [0]),
                ("ole32.dll!CoCreateInstance", [Data(0x00), 0, 1, Data(0x10), Data(0x20)]),
                ("kernel32.dll!Sleep", [Word(0x20)]),  # what CoCreateInstance left in *ppv
            ],
            data_area((0x00, unknown), (0x10, iunknown), (0x20, b"\xcc" * 4)),
        ),
        "co",
        "cocreate",
    )
    by_name = calls_by_name(trace)
    assert by_name["ole32.CoCreateInstance"][0].result == 0x80040154  # REGDB_E_CLASSNOTREG, not S_OK
    assert by_name["kernel32.Sleep"][0].args[0] == 0  # *ppv set to NULL, not left as it was


def test_a_class_speakeasy_models_gets_its_interface_and_an_unknown_interface_of_it_none():
    locator = bytes.fromhex("11f890453a1dd011891f00aa004b2e24")  # CLSID_WbemLocator
    iwbem_locator = bytes.fromhex("87a612dc7f73cf11884d00aa004b2e24")  # IID_IWbemLocator
    unknown = bytes.fromhex("67452301ab89efcd0123456789abcdef")
    trace = emulate(
        calls(
            [
                ("ole32.dll!CoCreateInstance", [Data(0x00), 0, 1, Data(0x10), Data(0x30)]),
                ("kernel32.dll!Sleep", [Word(0x30)]),  # *ppv: a pointer to the interface
                ("ole32.dll!CoCreateInstance", [Data(0x00), 0, 1, Data(0x20), Data(0x40)]),
                ("kernel32.dll!Sleep", [Word(0x40)]),
            ],
            data_area((0x00, locator), (0x10, iwbem_locator), (0x20, unknown), (0x40, b"\xcc" * 4)),
        ),
        "wbem",
        "cocreate-known",
    )
    by_name = calls_by_name(trace)
    created, missing = by_name["ole32.CoCreateInstance"]
    assert created.result == 0 and created.args[0] == "CLSID_WbemLocator"
    assert missing.result == 0x80004002  # E_NOINTERFACE
    assert by_name["kernel32.Sleep"][0].args[0] != 0
    assert by_name["kernel32.Sleep"][1].args[0] == 0
