"""Guard pages (guardpage.py): the first touch raises STATUS_GUARD_PAGE_VIOLATION to the program's
handler and lifts the guard; the anti-debugging check that calls a guarded `ret` sees the exception."""

import struct

from emu_pe import program
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

K32 = "kernel32.dll"
HANDLER_AT = 0x200
CONTEXT_EIP, CONTEXT_ESP = 0xB8, 0xC4


def _guard_check(protection: int, target: int = 0) -> bytes:
    """An x86 program that installs a raw SEH handler, allocates a page holding `ret`, gives it
    `protection` and calls it.  The handler stores the exception code at data+0x100 and resumes at
    `after` (the call's return address popped); reached without an exception, the code stores 1 at
    data+0x104 ("watched").  Both go to Sleep, whose recorded arguments show them.  With `target`, the
    call goes there instead."""

    def code(lay) -> bytes:
        def call(name: str) -> bytes:
            return b"\xff\x15" + struct.pack("<I", lay.slot(K32, name))

        d = lay.data
        head = (
            b"\x68" + struct.pack("<I", lay.text + HANDLER_AT)  # push handler
            + b"\x64\xff\x35\x00\x00\x00\x00"  # push dword ptr fs:[0]
            + b"\x64\x89\x25\x00\x00\x00\x00"  # mov fs:[0], esp
            + b"\x6a\x04\x68\x00\x10\x00\x00\x68\x00\x10\x00\x00\x6a\x00"  # push 4, 0x1000, 0x1000, 0
            + call("VirtualAlloc")
            + b"\xa3" + struct.pack("<I", d)  # mov [data], eax
            + b"\xc6\x00\xc3"  # mov byte ptr [eax], 0xc3 (ret)
            + b"\x68" + struct.pack("<I", d + 4)  # push &old
            + b"\x68" + struct.pack("<I", protection)  # push protection
            + b"\x68\x00\x10\x00\x00\x50"  # push 0x1000; push eax
            + call("VirtualProtect")
            + (b"\xc7\x05" + struct.pack("<II", d, target) if target else b"")  # mov dword ptr [data], target
            + b"\xff\x15" + struct.pack("<I", d)  # call dword ptr [data]
            + b"\xc7\x05" + struct.pack("<II", d + 0x104, 1)  # mov dword ptr [data+0x104], 1
        )  # fmt: skip
        after = lay.text + len(head)
        tail = (
            b"\xff\x35" + struct.pack("<I", d + 0x100) + call("Sleep")  # Sleep(code)
            + b"\xff\x35" + struct.pack("<I", d + 0x104) + call("Sleep")  # Sleep(watched)
            + b"\x64\x8f\x05\x00\x00\x00\x00"  # pop dword ptr fs:[0]
            + b"\x83\xc4\x04"  # add esp, 4
            + b"\xc3"  # ret
        )  # fmt: skip
        handler = (
            b"\x8b\x44\x24\x04"  # mov eax, [esp+4]  (EXCEPTION_RECORD)
            + b"\x8b\x00"  # mov eax, [eax]  (ExceptionCode)
            + b"\xa3" + struct.pack("<I", d + 0x100)  # mov [data+0x100], eax
            + b"\x8b\x4c\x24\x0c"  # mov ecx, [esp+0xc]  (CONTEXT)
            + b"\xc7\x81" + struct.pack("<II", CONTEXT_EIP, after)  # mov [ecx+Eip], after
            + b"\x83\x81" + struct.pack("<I", CONTEXT_ESP) + b"\x04"  # add dword ptr [ecx+Esp], 4
            + b"\x31\xc0"  # xor eax, eax  (ExceptionContinueExecution)
            + b"\xc3"  # ret
        )  # fmt: skip
        return (head + tail).ljust(HANDLER_AT, b"\xcc") + handler

    return program("i386", code, {K32: ["VirtualAlloc", "VirtualProtect", "Sleep"]})


def _sleeps(trace) -> list[int]:
    return [c.args[0] for c in trace.api_calls if c.name == "kernel32.Sleep"]


def test_calling_a_guarded_page_raises_the_guard_page_violation():
    trace = emulate(_guard_check(0x120), "x", "guard")  # PAGE_EXECUTE_READ | PAGE_GUARD
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    assert _sleeps(trace) == [0x80000001, 0]


def test_without_the_guard_the_ret_runs():
    trace = emulate(_guard_check(0x20), "x", "guard")  # PAGE_EXECUTE_READ
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    assert _sleeps(trace) == [0, 1]


def test_a_call_to_unmapped_memory_reaches_the_handler():
    # Speakeasy sent the fault to the handler, but unicorn's retried fetch from the unmapped address
    # ended the run (emulator.py maps a non-executable page there for the retry).
    trace = emulate(_guard_check(0x20, target=0x20000000), "x", "fetch")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    assert _sleeps(trace) == [0xC0000005, 0]
