"""Visual C++ 6's std::string (msvcp60.dll's basic_string<char>), which the program's inline code reads.

Each program runs a hand-assembled function through `_initterm` (so it can set `this` in ecx, as
`__thiscall` does), then hands the strings' buffers (`_Ptr`, at +4) to `lstrlenA`, whose recorded
argument shows the text, and their lengths (`_Len`, +8) and capacities (`_Res`, +12) to `SetLastError`.
"""

import struct

from emu_pe import IMAGE_BASE, TEXT_RVA, Data, Word, calls
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

DLL = "msvcp60.dll"
TEXT = IMAGE_BASE["i386"] + TEXT_RVA
S1, S2, S3 = 0x100, 0x110, 0x120  # three std::string objects (16 bytes each) in the data area
HELLO, WORLD = 0x200, 0x220
STRING = "?$basic_string@DU?$char_traits@D@std@@V?$allocator@D@2@@std@@"
TIDY = f"?_Tidy@{STRING}AAEX_N@Z"
COPY = f"?_Copy@{STRING}AAEXI@Z"
ASSIGN = f"?assign@{STRING}QAEAAV12@PBDI@Z"
ASSIGN_PART = f"?assign@{STRING}QAEAAV12@ABV12@II@Z"
APPEND = f"?append@{STRING}QAEAAV12@PBDI@Z"
INSERT = f"?insert@{STRING}QAEAAV12@IPBDI@Z"
COPY_CONSTRUCTOR = f"??0{STRING}QAE@ABV01@@Z"
NPOS = f"?npos@{STRING}2IB"


def _data() -> bytes:
    data = bytearray(0x300)
    data[HELLO : HELLO + 5] = b"hello"
    data[WORLD : WORLD + 6] = b" world"
    return bytes(data)


def _member(lay, name: str, this: int, *args) -> bytes:
    """mov ecx, this; push args (last first; a Data offset is an address); call [msvcp60!name]"""
    out = b"\xb9" + struct.pack("<I", lay.data + this)
    for a in reversed(args):
        out += b"\x68" + struct.pack("<I", (lay.data + a if isinstance(a, Data) else a) & 0xFFFFFFFF)
    return out + b"\xff\x15" + struct.pack("<I", lay.slot(DLL, name))


def _run(body, names: tuple[str, ...], steps: list):
    table = struct.pack("<I", TEXT + 0x800)
    program = calls(
        [("msvcrt.dll!_initterm", [Data(0x300), Data(0x304)], "cdecl"), *steps],
        _data() + table,
        code_at={0x800: lambda lay: body(lay) + b"\xc3"},
        extra_imports=tuple(f"{DLL}!{n}" for n in names),
    )
    trace = emulate(program, "x", "stdstring")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    return trace


def _args(trace, name: str) -> list:
    return [c.args[0] for c in trace.api_calls if c.name == f"kernel32.{name}"]


def test_assign_append_insert_and_copy_keep_dinkumware_layout():
    # S1 = "hello" (the inline constructor: _Tidy(false), assign(s, n)); S1 += " world";
    # S2(S1); S2.insert(0, "hello", 1); S3.assign(S1, 6, npos) with npos read from msvcp60's data export
    def body(lay):
        return (
            _member(lay, TIDY, S1, 0)
            + _member(lay, ASSIGN, S1, Data(HELLO), 5)
            + _member(lay, APPEND, S1, Data(WORLD), 6)
            + _member(lay, COPY_CONSTRUCTOR, S2, Data(S1))
            + _member(lay, INSERT, S2, 0, Data(HELLO), 1)
            + _member(lay, TIDY, S3, 0)
            + b"\xa1" + struct.pack("<I", lay.slot(DLL, NPOS))  # mov eax, [npos import]
            + b"\xff\x30"  # push dword ptr [eax]
            + _member(lay, ASSIGN_PART, S3, Data(S1), 6)[:-6]  # (npos already pushed)
            + b"\xff\x15" + struct.pack("<I", lay.slot(DLL, ASSIGN_PART))
        )  # fmt: skip

    lstrlen, set_error = "kernel32.dll!lstrlenA", "kernel32.dll!SetLastError"
    steps = [(lstrlen, [Word(S1 + 4)]), (lstrlen, [Word(S2 + 4)]), (lstrlen, [Word(S3 + 4)])]
    steps += [(set_error, [Word(S + 8)]) for S in (S1, S2, S3)] + [(set_error, [Word(S1 + 12)])]
    trace = _run(body, (TIDY, ASSIGN, APPEND, COPY_CONSTRUCTOR, INSERT, ASSIGN_PART, NPOS), steps)
    assert _args(trace, "lstrlenA") == ["hello world", "hhello world", "world"]
    # lengths, and S1's capacity: _Copy allocates n | 31 characters
    assert _args(trace, "SetLastError") == [11, 12, 5, 31]


def test_copy_gives_an_unshared_buffer_the_inline_code_writes_through():
    # The inlined half of _Grow: _Tidy(true), _Copy(40), then the program writes the text itself and
    # reads the reference count byte before the text (0: its own buffer).
    def body(lay):
        return (
            _member(lay, TIDY, S1, 0)
            + _member(lay, TIDY, S1, 1)
            + _member(lay, COPY, S1, 40)
            + b"\x8b\x0d" + struct.pack("<I", lay.data + S1 + 4)  # mov ecx, [S1._Ptr]
            + b"\xc7\x01ok!\x00"  # mov dword ptr [ecx], "ok!\0"
            + b"\x0f\xb6\x41\xff"  # movzx eax, byte ptr [ecx - 1]
            + b"\xa3" + struct.pack("<I", lay.data + S2)  # mov [S2], eax
        )  # fmt: skip

    steps = [("kernel32.dll!lstrlenA", [Word(S1 + 4)]), ("kernel32.dll!SetLastError", [Word(S1 + 12)])]
    steps += [("kernel32.dll!SetLastError", [Word(S2)])]
    trace = _run(body, (TIDY, COPY), steps)
    assert _args(trace, "lstrlenA") == ["ok!"]
    assert _args(trace, "SetLastError") == [63, 0]
