"""MFC 4.2's CString (mfc42.dll by ordinal), which an MFC program's own code builds and reads inline.

Each program runs a hand-assembled function through `_initterm` (so it can set `this` in ecx, as
`__thiscall` does), then hands the strings it built to `lstrlenA`, whose recorded argument shows the text,
and the length MFC keeps at `m_pchData - 8` (which inline `GetLength` reads) to `Sleep`.
"""

import struct

from emu_pe import IMAGE_BASE, TEXT_RVA, Data, Word, calls
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

MFC = "mfc42.dll"
TEXT = IMAGE_BASE["i386"] + TEXT_RVA
S1, S2, S3 = 0x100, 0x104, 0x108  # three CString objects (one pointer each) in the data area
HELLO, WORLD, NAME = 0x200, 0x220, 0x240  # C strings in the data area


def _strings() -> bytes:
    data = bytearray(0x300)
    for offset, text in ((HELLO, b"hello"), (WORLD, b" world"), (NAME, b"\\x.dll")):
        data[offset : offset + len(text)] = text
    return bytes(data)


def _member(lay, ordinal: int, this: int, *args: int) -> bytes:
    """mov ecx, this; push args (last first); call [mfc42 #ordinal]"""
    out = b"\xb9" + struct.pack("<I", lay.data + this)
    for a in reversed(args):
        out += b"\x68" + struct.pack("<I", a & 0xFFFFFFFF)
    return out + b"\xff\x15" + struct.pack("<I", lay.slot(MFC, f"#{ordinal}"))


def _report_length(lay, this: int) -> bytes:
    """mov eax, [this]; push dword ptr [eax - 8]; call [Sleep]"""
    return (
        b"\xa1" + struct.pack("<I", lay.data + this)
        + b"\xff\x70\xf8"
        + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "Sleep"))
    )  # fmt: skip


def _run(body, ordinals: tuple[int, ...], steps: list) -> object:
    def function(lay):
        return body(lay) + b"\xc3"  # ret

    table = struct.pack("<I", TEXT + 0x800)
    data = _strings() + table
    program = calls(
        [("msvcrt.dll!_initterm", [Data(0x300), Data(0x304)], "cdecl"), *steps],
        data,
        code_at={0x800: function},
        extra_imports=(
            "kernel32.dll!Sleep",
            "kernel32.dll!GetModuleFileNameA",
            *(f"{MFC}!#{n}" for n in ordinals),
        ),
    )
    trace = emulate(program, "x", "mfcstring")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    return trace


def _texts(trace) -> list[str]:
    return [c.args[0] for c in trace.api_calls if c.name == "kernel32.lstrlenA"]


def _sleeps(trace) -> list[int]:
    return [c.args[0] for c in trace.api_calls if c.name == "kernel32.Sleep"]


def test_construct_copy_and_append_keep_each_string_its_own_text():
    # S1 = "hello"; S2 = S1 (a shared copy); S2 += " world" (S2 gets its own block); S3 = S2 + S1's text
    def body(lay):
        return (
            _member(lay, 537, S1, lay.data + HELLO)
            + _member(lay, 535, S2, lay.data + S1)
            + _member(lay, 941, S2, lay.data + WORLD)
            + _member(lay, 540, S3)
            + _member(lay, 858, S3, lay.data + S2)
            + _member(lay, 939, S3, lay.data + S1)
            + _report_length(lay, S1)
            + _report_length(lay, S2)
            + _report_length(lay, S3)
        )

    lstrlen = "kernel32.dll!lstrlenA"
    steps = [(lstrlen, [Word(S1)]), (lstrlen, [Word(S2)]), (lstrlen, [Word(S3)])]
    trace = _run(body, (537, 535, 941, 540, 858, 939), steps)
    assert _texts(trace) == ["hello", "hello world", "hello worldhello"]
    assert _sleeps(trace) == [5, 11, 16]
    assert "mfc42.ordinal_537" in {c.name for c in trace.api_calls if c.supported}


def test_get_buffer_release_buffer_reverse_find_and_left_build_a_path():
    # The MFC idiom for "a file beside the program": GetModuleFileName into GetBuffer(MAX_PATH),
    # ReleaseBuffer(-1), then Left(ReverseFind('\\')) + "\\x.dll".
    def body(lay):
        get_module_file_name = lay.slot("kernel32.dll", "GetModuleFileNameA")
        return (
            _member(lay, 540, S1)
            + _member(lay, 2915, S1, 260)
            + b"\x68" + struct.pack("<I", 260) + b"\x50\x6a\x00"  # push 260; push eax; push 0
            + b"\xff\x15" + struct.pack("<I", get_module_file_name)
            + _member(lay, 5572, S1, -1)
            + _member(lay, 5683, S1, ord("\\"))
            + b"\x50"  # push eax (the index)
            + b"\x68" + struct.pack("<I", lay.data + S2)  # push &result
            + b"\xb9" + struct.pack("<I", lay.data + S1)  # mov ecx, S1
            + b"\xff\x15" + struct.pack("<I", lay.slot(MFC, "#4129"))  # call [CString::Left]
            + _member(lay, 941, S2, lay.data + NAME)
            + _report_length(lay, S2)
            + _member(lay, 800, S1)
        )  # fmt: skip

    steps = [("kernel32.dll!lstrlenA", [Word(S2)])]
    trace = _run(body, (540, 2915, 5572, 5683, 4129, 941, 800), steps)
    path = next(c.args[1] for c in trace.api_calls if c.name == "kernel32.GetModuleFileNameA")
    expected = path.rsplit("\\", 1)[0] + "\\x.dll"
    assert _texts(trace) == [expected]
    assert _sleeps(trace) == [len(expected)]
