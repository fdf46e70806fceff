"""Revision 24's plain answers (`simpleanswers.py`) and C runtime functions (`crtstrings.py`, `realloc`
in `crtfuncs.py`), each seen through what an emulated program does with it next."""

from __future__ import annotations

from emu_pe import Data, Word, ansi, calls, calls_by_name, data_area, utf16
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason


def _run(steps, data):
    trace = emulate(calls(steps, data), "x", "answers")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    return calls_by_name(trace)


def test_drives_semaphores_windows_and_bstrs_answer_as_windows_does():
    data = data_area((0x100, utf16("grown text")), size=0x400)
    by_name = _run(
        [
            ("kernel32.dll!GetLogicalDriveStringsA", [0, 0]),  # the size needed
            ("kernel32.dll!GetLogicalDriveStringsA", [0x40, Data(0x000)]),
            ("kernel32.dll!lstrlenA", [Data(0x000)]),
            ("kernel32.dll!CreateSemaphoreW", [0, 1, 1, 0]),
            ("user32.dll!GetWindowThreadProcessId", [0x1234, Data(0x080)]),
            ("kernel32.dll!GetCurrentProcessId", []),
            ("kernel32.dll!Sleep", [Word(0x080)]),  # the process id it wrote
            ("oleaut32.dll!SysReAllocStringLen", [Data(0x0C0), Data(0x100), 5]),
            ("kernel32.dll!lstrlenW", [Word(0x0C0)]),
            ("ole32.dll!CoTaskMemAlloc", [0x20]),
        ],
        data,
    )
    drives = by_name["kernel32.GetLogicalDriveStringsA"]
    assert drives[0].result == drives[1].result + 1 and drives[1].result % 4 == 0 and drives[1].result >= 4
    assert by_name["kernel32.lstrlenA"][0].args[0] == "C:\\"
    assert by_name["kernel32.CreateSemaphoreW"][0].result != 0
    assert by_name["kernel32.Sleep"][0].args[0] == by_name["kernel32.GetCurrentProcessId"][0].result
    assert by_name["oleaut32.SysReAllocStringLen"][0].result == 1
    assert by_name["kernel32.lstrlenW"][0].args[0] == "grown"
    assert by_name["ole32.CoTaskMemAlloc"][0].result != 0


def test_realloc_keeps_the_bytes_and_strtok_splits_a_command_line():
    data = data_area(
        (0x000, ansi("abcdef")), (0x040, ansi("  run,now  fast")), (0x080, ansi(" ,")), size=0x400
    )
    by_name = _run(
        [
            ("msvcrt.dll!malloc", [8], "cdecl", Data(0x200)),
            ("msvcrt.dll!strcpy", [Word(0x200), Data(0x000)], "cdecl"),
            ("msvcrt.dll!realloc", [Word(0x200), 0x100], "cdecl", Data(0x204)),
            ("kernel32.dll!lstrlenA", [Word(0x204)]),  # the bytes moved with the block
            ("msvcrt.dll!_msize", [Word(0x204)], "cdecl"),
            ("msvcrt.dll!strtok", [Data(0x040), Data(0x080)], "cdecl", Data(0x208)),
            ("kernel32.dll!lstrlenA", [Word(0x208)]),
            ("msvcrt.dll!strtok", [0, Data(0x080)], "cdecl", Data(0x208)),
            ("kernel32.dll!lstrlenA", [Word(0x208)]),
            ("msvcrt.dll!strtok", [0, Data(0x080)], "cdecl", Data(0x208)),
            ("kernel32.dll!lstrlenA", [Word(0x208)]),
            ("msvcrt.dll!strtok", [0, Data(0x080)], "cdecl"),  # nothing left
            ("msvcrt.dll!_mbscmp", [Data(0x000), Data(0x040)], "cdecl"),
            ("msvcrt.dll!_strupr", [Data(0x000)], "cdecl"),
            ("kernel32.dll!lstrlenA", [Data(0x000)]),
        ],
        data,
    )
    texts = [c.args[0] for c in by_name["kernel32.lstrlenA"]]
    assert texts == ["abcdef", "run", "now", "fast", "ABCDEF"]
    assert by_name["msvcrt._msize"][0].result >= 0x100
    assert by_name["msvcrt.strtok"][-1].result == 0
    assert by_name["msvcrt._mbscmp"][0].result == 1  # "abcdef" > "  run,..."
