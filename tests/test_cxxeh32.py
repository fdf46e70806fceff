"""x86 C++ exceptions (`cxxeh32.py`): a throw reaches the catch block whose type matches, the frames it
leaves run their destructors, and execution goes on where the catch block says.

The programs are assembled by hand as MSVC lays out a function with `try`: the registration
`{next, handler, state}` at ebp-0Ch, the saved esp at ebp-10h, a handler thunk `mov eax, FuncInfo;
jmp [__CxxFrameHandler3]`, and the FuncInfo, try-block map, handler types, unwind map and the thrown
object's ThrowInfo in the data section.
"""

from __future__ import annotations

import struct

import pytest

from emu_pe import DATA_RVA, DATA_SIZE, IMAGE_BASE, TEXT_RVA, calls_by_name, data_area, program
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

T = IMAGE_BASE["i386"] + TEXT_RVA  # where the code section starts
D = IMAGE_BASE["i386"] + DATA_RVA + DATA_SIZE // 2  # where `data` starts
MAIN, THROWER, CONTINUATION, CATCH, CATCH_ALL, DESTRUCTOR = 0x000, 0x100, 0x180, 0x200, 0x220, 0x240
THUNK_MAIN, THUNK_THROWER = 0x280, 0x2A0
OBJ, TD_INT, TD_CHAR, CT, CTA, THROW_INFO, HANDLER, TRY = 0x00, 0x10, 0x30, 0x50, 0x70, 0x80, 0xA0, 0xC0
UNWIND_MAIN, FUNC_INFO_MAIN, UNWIND_THROWER, FUNC_INFO_THROWER, RESULT = 0xE0, 0x100, 0x140, 0x150, 0x200
CRT = "msvcrt.dll"
IMPORTS = {CRT: ["_CxxThrowException", "__CxxFrameHandler3"], "kernel32.dll": ["ExitProcess", "Sleep"]}


def p32(value: int) -> bytes:
    return struct.pack("<I", value & 0xFFFFFFFF)


def _prologue(thunk: int, frame: int) -> bytes:
    return (
        b"\x55"  # push ebp
        + b"\x8b\xec"  # mov ebp, esp
        + b"\x6a\xff"  # push -1 (state)
        + b"\x68" + p32(T + thunk)  # push handler thunk
        + b"\x64\xa1" + p32(0)  # mov eax, fs:[0]
        + b"\x50"  # push eax (next)
        + b"\x64\x89\x25" + p32(0)  # mov fs:[0], esp
        + b"\x83\xec" + bytes([frame])  # sub esp, frame
        + b"\x89\x65\xf0"  # mov [ebp-10h], esp (saved esp)
        + b"\xc7\x45\xfc" + p32(0)  # mov dword [ebp-4], 0 (state 0)
    )  # fmt: skip


THROW = (
    b"\x68" + p32(D + THROW_INFO)  # push throw info
    + b"\x68" + p32(D + OBJ)  # push object
    + b"\xff\x15"  # call [_CxxThrowException] (slot appended by _code)
)  # fmt: skip


def _code(body: str):
    def code(lay) -> bytes:
        throw = THROW + p32(lay.slot(CRT, "_CxxThrowException")) + b"\xcc"  # int 3 after the call, as MSVC
        bodies = {
            "throw": throw,
            "call": b"\xb8" + p32(T + THROWER) + b"\xff\xd0" + b"\xcc",  # mov eax, thrower; call eax
            "fault": b"\xa1" + p32(0xDEAD0000) + b"\xcc",  # mov eax, [unmapped]
        }
        handler = p32(lay.slot(CRT, "__CxxFrameHandler3"))
        parts = {
            MAIN: _prologue(THUNK_MAIN, 0x20) + bodies[body],
            THROWER: _prologue(THUNK_THROWER, 0x10) + throw,
            CONTINUATION: (
                b"\xc7\x45\xfc" + p32(-1)  # mov dword [ebp-4], -1
                + b"\x8b\x4d\xf4"  # mov ecx, [ebp-0Ch]
                + b"\x64\x89\x0d" + p32(0)  # mov fs:[0], ecx
                + b"\xff\x35" + p32(D + RESULT)  # push dword [result]
                + b"\xff\x15" + p32(lay.slot("kernel32.dll", "ExitProcess"))  # call [ExitProcess]
            ),
            CATCH: (
                b"\x8b\x45\xec"  # mov eax, [ebp-14h] (the catch object)
                + b"\xa3" + p32(D + RESULT)  # mov [result], eax
                + b"\xb8" + p32(T + CONTINUATION)  # mov eax, continuation
                + b"\xc3"  # ret
            ),
            CATCH_ALL: (
                b"\xc7\x05" + p32(D + RESULT) + p32(5)  # mov dword [result], 5
                + b"\xb8" + p32(T + CONTINUATION)  # mov eax, continuation
                + b"\xc3"  # ret
            ),
            DESTRUCTOR: b"\x6a\x07" + b"\xff\x15" + p32(lay.slot("kernel32.dll", "Sleep")) + b"\xc3",
            THUNK_MAIN: b"\xb8" + p32(D + FUNC_INFO_MAIN) + b"\xff\x25" + handler,  # mov eax; jmp [handler]
            THUNK_THROWER: b"\xb8" + p32(D + FUNC_INFO_THROWER) + b"\xff\x25" + handler,
        }  # fmt: skip
        out = bytearray(b"\xcc" * 0x300)
        for offset, part in parts.items():
            out[offset : offset + len(part)] = part
        return bytes(out)

    return code


def _data(catch_type: int, funclet: int, magic: int = 0x19930522, eh_flags: int = 1) -> bytes:
    """`catch_type`: TD_INT, TD_CHAR or 0 (catch (...)); the catch object at ebp-14h."""
    return data_area(
        (OBJ, p32(42)),
        (TD_INT, p32(0) + p32(0) + b".H\0"),
        (TD_CHAR, p32(0) + p32(0) + b".D\0"),
        (CT, struct.pack("<IIiiiiI", 1, D + TD_INT, 0, -1, 0, 4, 0)),  # a simple type, 4 bytes
        (CTA, p32(1) + p32(D + CT)),
        (THROW_INFO, p32(0) + p32(0) + p32(0) + p32(D + CTA)),
        (HANDLER, struct.pack("<IIiI", 0, D + catch_type if catch_type else 0, -0x14, T + funclet)),
        (TRY, struct.pack("<iiiII", 0, 0, 1, 1, D + HANDLER)),
        (UNWIND_MAIN, struct.pack("<iIiI", -1, 0, -1, 0)),
        (FUNC_INFO_MAIN, struct.pack("<IiIIIIIII", magic, 2, D + UNWIND_MAIN, 1, D + TRY, 0, 0, 0, eh_flags)),
        (UNWIND_THROWER, struct.pack("<iI", -1, T + DESTRUCTOR)),
        (FUNC_INFO_THROWER, struct.pack("<IiIIIIIII", 0x19930522, 1, D + UNWIND_THROWER, 0, 0, 0, 0, 0, 1)),
    )


def _run(body: str, data: bytes):
    trace = emulate(program("i386", _code(body), IMPORTS, data=data), "cxx", body)
    return trace, calls_by_name(trace)


def test_a_throw_runs_the_catch_block_of_its_type_and_goes_on_where_the_block_says():
    trace, by_name = _run("throw", _data(TD_INT, CATCH))
    assert [c.args[0] for c in by_name["kernel32.ExitProcess"]] == [42]  # the catch object: the int thrown
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    assert len(by_name["msvcrt.__CxxFrameHandler3"]) == 1


def test_a_throw_no_catch_takes_ends_the_run_instead_of_looping():
    trace, _by_name = _run("throw", _data(TD_CHAR, CATCH))
    # The runtime's terminate(): not the int 3 after the call answered again and again.
    assert [c.name for c in trace.api_calls] == ["msvcrt._CxxThrowException"]
    assert "unhandled_exception 0xe06d7363" in trace.meta.stop_detail


def test_the_frames_a_throw_leaves_run_their_destructors_before_the_catch():
    trace, by_name = _run("call", _data(TD_INT, CATCH))
    names = [c.name for c in trace.api_calls]
    assert names.index("kernel32.Sleep") < names.index("kernel32.ExitProcess")
    assert [c.args[0] for c in by_name["kernel32.Sleep"]] == [7]
    assert [c.args[0] for c in by_name["kernel32.ExitProcess"]] == [42]


@pytest.mark.parametrize(("magic", "eh_flags", "caught"), [(0x19930520, 0, True), (0x19930522, 1, False)])
def test_catch_all_takes_a_fault_only_where_the_function_was_not_built_with_ehs(magic, eh_flags, caught):
    _trace, by_name = _run("fault", _data(0, CATCH_ALL, magic, eh_flags))
    assert ("kernel32.ExitProcess" in by_name) is caught
    if caught:
        assert [c.args[0] for c in by_name["kernel32.ExitProcess"]] == [5]


class _OnePage:
    """Emulated memory of one mapped page, read as unicorn reads it (an unmapped byte fails the read)."""

    def __init__(self, base: int, data: bytes) -> None:
        self.base, self.data = base, data

    def mem_read(self, address: int, size: int) -> bytearray:
        from unicorn import UcError
        from unicorn.unicorn_const import UC_ERR_READ_UNMAPPED

        if address < self.base or address + size > self.base + len(self.data):
            raise UcError(UC_ERR_READ_UNMAPPED)
        return bytearray(self.data[address - self.base : address - self.base + size])


def test_a_type_name_at_the_end_of_its_section_is_read_up_to_its_nul():
    from runtrace.trace.emulate.cxxeh32 import CxxExceptions

    base = 0x10000
    page = bytearray(0x1000)
    descriptor = base + 0x1000 - 16  # pVFTable, spare, then ".H" and its NUL: 512 bytes would run off
    page[0x1000 - 8 : 0x1000 - 5] = b".H\0"
    page[0x1000 - 40 : 0x1000 - 40 + 8] = b".?AVx@@\0"
    cxx = CxxExceptions(_OnePage(base, bytes(page)))
    assert cxx._name(descriptor) == b".H"
    assert cxx._name(base + 0x1000 - 48) == b".?AVx@@"
    # No NUL before the end of what is mapped: a name of its own, not catch (...)'s empty one.
    assert cxx._name(base + 0x1000 - 4) not in (b"", cxx._name(descriptor))
