"""API calls answered by a code hook over Speakeasy's mapped reserved region (tracer revision 14)."""

import struct

import pytest

from emu_pe import Layout, api_loop, program
from runtrace.trace.emulate.emulator import TracerSettings, emulate
from runtrace.trace.emulate.fidelity import api_returns
from runtrace.trace.model import StopReason


@pytest.mark.parametrize("arch", ["i386", "amd64"])
def test_a_loop_of_api_calls_returns_to_its_caller_every_time(arch):
    trace = emulate(api_loop(arch, 500), "x", "loop")
    names = [c.name for c in trace.api_calls]
    assert names == ["kernel32.GetCurrentProcessId"] * 500
    counts = api_returns(trace)
    assert counts.returning == counts.followed == 500
    # The loop ran to its end and returned from the entry point: the stack was right all along.
    assert trace.meta.stop_reason is StopReason.EXITED
    per_call = 5 if arch == "i386" else 3
    assert trace.instruction_count == (1 + 500 * per_call + 1 if arch == "i386" else 3 + 500 * per_call + 3)


def test_stdcall_arguments_are_popped_and_cdecl_ones_left_to_the_caller():
    # Sleep(0) (stdcall: the callee pops its argument) then rand() (cdecl) in a loop of 300; the
    # caller re-reads a counter in memory each time, so a stack off by a slot would show at `ret`.
    def code(lay: Layout) -> bytes:
        return (
            b"\xb9" + struct.pack("<I", 300)  # mov ecx, 300
            + b"\x51"  # loop: push ecx
            + b"\x6a\x00"  # push 0
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "Sleep"))  # call [Sleep]
            + b"\xff\x15" + struct.pack("<I", lay.slot("msvcrt.dll", "rand"))  # call [rand]
            + b"\x59"  # pop ecx
            + b"\x49"  # dec ecx
            + b"\x75\xed"  # jne loop
            + b"\xc3"  # ret
        )  # fmt: skip

    data = program("i386", code, {"kernel32.dll": ["Sleep"], "msvcrt.dll": ["rand"]})
    trace = emulate(data, "x", "stack")
    assert [c.name for c in trace.api_calls] == ["kernel32.Sleep", "msvcrt.rand"] * 300
    assert trace.meta.stop_reason is StopReason.EXITED
    assert api_returns(trace).followed == 600


def test_an_imported_variable_speakeasy_does_not_know_reads_as_zero():
    # mov eax, [slot]: the address Speakeasy gave the import (in its reserved region); mov eax, [eax]:
    # its "value", which reads 0 as it always did; then one of two APIs says which way it went.
    def code(lay: Layout) -> bytes:
        return (
            b"\xa1" + struct.pack("<I", lay.slot("python38.dll", "Py_VerboseFlag"))  # mov eax, [slot]
            + b"\x8b\x00"  # mov eax, [eax]
            + b"\x85\xc0"  # test eax, eax
            + b"\x75\x07"  # jne +7
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "GetCurrentProcessId"))  # call
            + b"\xc3"  # ret
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "GetTickCount"))  # call
            + b"\xc3"  # ret
        )  # fmt: skip

    imports = {"kernel32.dll": ["GetCurrentProcessId", "GetTickCount"], "python38.dll": ["Py_VerboseFlag"]}
    trace = emulate(program("i386", code, imports), "x", "data")
    assert [c.name for c in trace.api_calls] == ["kernel32.GetCurrentProcessId"]
    assert trace.meta.stop_reason is StopReason.EXITED


def test_an_api_that_changes_memory_protection_is_answered_once():
    # VirtualProtect on the program's own code: unicorn translates the trap's block again and runs
    # its hooks a second time; the call must still be made (and recorded) once.
    def code(lay: Layout) -> bytes:
        old = lay.data
        return (
            b"\x68" + struct.pack("<I", old)  # push &old
            + b"\x6a\x40"  # push PAGE_EXECUTE_READWRITE
            + b"\x68\x00\x10\x00\x00"  # push 0x1000
            + b"\x68" + struct.pack("<I", lay.text)  # push text
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "VirtualProtect"))  # call
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "GetCurrentProcessId"))  # call
            + b"\xc3"  # ret
        )  # fmt: skip

    trace = emulate(
        program("i386", code, {"kernel32.dll": ["VirtualProtect", "GetCurrentProcessId"]}), "x", "vp"
    )
    assert [c.name for c in trace.api_calls] == ["kernel32.VirtualProtect", "kernel32.GetCurrentProcessId"]
    assert trace.meta.stop_reason is StopReason.EXITED


def test_a_call_to_an_address_nobody_answers_ends_the_run_as_before():
    # A call into Speakeasy's reserved region where nothing lives: Speakeasy's own `invalid_fetch`.
    def code(lay: Layout) -> bytes:
        return b"\xb8" + struct.pack("<I", 0xFEEE2F00) + b"\xff\xd0\xc3"  # mov eax, addr; call eax; ret

    trace = emulate(program("i386", code), "x", "nowhere", TracerSettings())
    assert trace.meta.stop_reason is StopReason.EMULATION_FAULT
    assert "invalid_fetch" in trace.meta.stop_detail
