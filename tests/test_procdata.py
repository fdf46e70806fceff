"""`GetProcAddress` of a C-runtime variable (`procdata.py`): the variable, not a function trampoline."""

from __future__ import annotations

from emu_pe import Data, Word, calls
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason


def test_get_proc_address_of_acmdln_gives_the_command_line_pointer():
    data = b"msvcrt.dll\0".ljust(0x10, b"\0") + b"_acmdln\0".ljust(0x10, b"\0") + b"memcpy\0"
    steps = [
        ("kernel32.dll!LoadLibraryA", [Data(0)], Data(0x100)),
        ("kernel32.dll!GetProcAddress", [Word(0x100), Data(0x10)], Data(0x104)),
        ("kernel32.dll!GetProcAddress", [Word(0x100), Data(0x10)], Data(0x108)),
        ("kernel32.dll!GetProcAddress", [Word(0x100), Data(0x20)]),
        # *(char **)_acmdln -> data + 0x10c, then its length: the recorded argument is the text.
        ("msvcrt.dll!memcpy", [Data(0x10C), Word(0x104), 4], "cdecl"),
        ("kernel32.dll!lstrlenA", [Word(0x10C)]),
    ]
    trace = emulate(calls(steps, data), "x", "procdata")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    first, again, function = (c.result for c in trace.api_calls if c.name.endswith("GetProcAddress"))
    assert first == again != function  # one variable, looked up twice; a function stays a trampoline
    (length,) = (c for c in trace.api_calls if c.name.endswith("lstrlenA"))
    assert "program.exe" in length.args[0].lower() and length.result == len(length.args[0])
