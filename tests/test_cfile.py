"""MFC 4.2's CFile (mfc42.dll by ordinal) over the emulated file system: a dropper's write-out.

The program runs a hand-assembled function through `_initterm` (so it can set `this` in ecx, as
`__thiscall` does): CFile(), Open(name, modeCreate | modeWrite, NULL), Write(text, n), Close(),
~CFile(); then it reads the file back with kernel32, whose recorded calls show what was written.
"""

import struct

from emu_pe import IMAGE_BASE, TEXT_RVA, Data, Word, calls
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

MFC = "mfc42.dll"
TEXT = IMAGE_BASE["i386"] + TEXT_RVA
FILE, RESULTS = 0x100, 0x120  # a CFile (16 bytes); Open's results
NAME, MISSING, PAYLOAD, BUFFER = 0x200, 0x240, 0x280, 0x400
HANDLE, READ = 0x130, 0x134


def _data() -> bytes:
    data = bytearray(0x500)
    for offset, text in (
        (NAME, rb"C:\drop\payload.bin"),
        (MISSING, rb"C:\nowhere.bin"),
        (PAYLOAD, b"MZ payload"),
    ):
        data[offset : offset + len(text)] = text
    return bytes(data)


def _member(lay, ordinal: int, *args, result: int | None = None) -> bytes:
    """mov ecx, FILE; push args (a Data offset is an address); call [mfc42 #ordinal]; [mov [result], eax]"""
    out = b"\xb9" + struct.pack("<I", lay.data + FILE)
    for a in reversed(args):
        out += b"\x68" + struct.pack("<I", (lay.data + a if isinstance(a, Data) else a) & 0xFFFFFFFF)
    out += b"\xff\x15" + struct.pack("<I", lay.slot(MFC, f"#{ordinal}"))
    return out + (b"\xa3" + struct.pack("<I", lay.data + result) if result is not None else b"")


def test_cfile_creates_writes_and_closes_an_emulated_file():
    def body(lay):
        return (
            _member(lay, 354)
            + _member(lay, 5186, Data(MISSING), 0, 0, result=RESULTS)  # modeRead: no such file
            + _member(lay, 5186, Data(NAME), 0x1001, 0, result=RESULTS + 4)  # modeCreate | modeWrite
            + _member(lay, 6385, Data(PAYLOAD), 10)
            + _member(lay, 1979)
            + _member(lay, 665)
            + b"\xc3"
        )

    steps = [
        ("kernel32.dll!SetLastError", [Word(RESULTS)]),
        ("kernel32.dll!SetLastError", [Word(RESULTS + 4)]),
        ("kernel32.dll!CreateFileA", [Data(NAME), 0x80000000, 1, 0, 3, 0x80, 0], Data(HANDLE)),
        ("kernel32.dll!ReadFile", [Word(HANDLE), Data(BUFFER), 64, Data(READ), 0]),
        ("kernel32.dll!lstrlenA", [Data(BUFFER)]),
    ]
    program = calls(
        [("msvcrt.dll!_initterm", [Data(0x500), Data(0x504)], "cdecl"), *steps],
        _data() + struct.pack("<I", TEXT + 0x800),
        code_at={0x800: body},
        extra_imports=tuple(f"{MFC}!#{n}" for n in (354, 5186, 6385, 1979, 665)),
    )
    trace = emulate(program, "x", "cfile")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    assert [c.args[0] for c in trace.api_calls if c.name == "kernel32.SetLastError"] == [0, 1]
    assert [c.args[0] for c in trace.api_calls if c.name == "kernel32.lstrlenA"] == ["MZ payload"]
