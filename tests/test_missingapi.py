"""The handlers of missingapi.py (tracer revision 20), in small emulated programs and on their own."""

import struct

import pytest

from emu_pe import Data, Text, Word, calls
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.emulate.missingapi import (
    FIRST_TEMP_UNIQUE,
    MAPVK_VK_TO_CHAR,
    MAPVK_VK_TO_VSC,
    MAPVK_VSC_TO_VK,
    dos_date_time_to_file_time,
    file_time_to_dos_date_time,
    map_virtual_key,
    mul_div,
    time_zone_information,
)
from runtrace.trace.model import StopReason

SLEEP = "kernel32.dll!Sleep"


def _run(steps, data=b""):
    trace = emulate(calls(steps, data), "x", "missingapi")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    return trace


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((10, 3, 4), 8),  # 7.5 rounds away from zero
        ((-10, 3, 4), -8),
        ((7, 1, 2), 4),
        ((2**31 - 1, 2, 2), 2**31 - 1),  # the product needs 64 bits, the result does not
        ((2**31 - 1, 4, 1), -1),  # does not fit
        ((5, 5, 0), -1),  # division by zero
        ((0xFFFFFFFF, 6, 3), -2),  # arguments arrive as unsigned 32-bit words
    ],
)
def test_mul_div(args, expected):
    assert mul_div(*args) == expected


def test_map_virtual_key_on_a_us_layout():
    assert map_virtual_key(ord("A"), MAPVK_VK_TO_VSC) == 0x1E
    assert map_virtual_key(0x1E, MAPVK_VSC_TO_VK) == ord("A")
    assert (
        map_virtual_key(ord("1"), MAPVK_VK_TO_VSC) == 0x02
        and map_virtual_key(ord("0"), MAPVK_VK_TO_VSC) == 0x0B
    )
    assert (
        map_virtual_key(ord("Q"), MAPVK_VK_TO_CHAR) == ord("Q")
        and map_virtual_key(0x20, MAPVK_VK_TO_CHAR) == 0x20
    )
    assert map_virtual_key(0x70, MAPVK_VK_TO_VSC) == 0  # F1: not in the table, no translation
    assert map_virtual_key(ord("A"), 99) == 0


def test_apis_in_a_program():
    data = b"C:\\Temp\0".ljust(0x20, b"\0") + b"inst\0".ljust(0x20, b"\0")
    trace = _run([
        ("kernel32.dll!MulDiv", [96, 72, 72]),
        ("kernel32.dll!GetTimeZoneInformation", [Data(0x100)]),
        (SLEEP, [Word(0x100)]),  # Bias: UTC
        ("kernel32.dll!GetTempFileNameA", [Data(0), Data(0x20), 0, Data(0x200)]),
        ("kernel32.dll!lstrlenA", [Data(0x200)]),
        ("kernel32.dll!GetTempFileNameA", [Data(0), Data(0x20), 0, Data(0x200)]),
        ("kernel32.dll!GetTempFileNameA", [Data(0), Data(0x20), 0x42, Data(0x300)]),
        ("kernel32.dll!CreateFileA", [Data(0x200), 0x80000000, 1, 0, 3, 0x80, 0]),  # OPEN_EXISTING
        ("user32.dll!MapVirtualKeyW", [ord("W"), MAPVK_VK_TO_VSC]),
        ("shell32.dll!SHGetSpecialFolderPathA", [0, Data(0x400), 0x1A, 0]),  # CSIDL_APPDATA
        ("kernel32.dll!lstrlenA", [Data(0x400)]),
        ("shell32.dll!SHGetSpecialFolderPathW", [0, Data(0x600), 0x8025, 0]),  # CSIDL_SYSTEM | FLAG_CREATE
        ("kernel32.dll!lstrlenW", [Data(0x600)]),
    ], data)  # fmt: skip
    by_name = {}
    for c in trace.api_calls:
        by_name.setdefault(c.name, []).append(c)
    assert by_name["kernel32.MulDiv"][0].result == 96
    assert by_name["kernel32.GetTimeZoneInformation"][0].result == 0
    assert [c.args[0] for c in by_name["kernel32.Sleep"]] == [0]
    first, second, given = by_name["kernel32.GetTempFileNameA"]
    assert first.result == FIRST_TEMP_UNIQUE and second.result == FIRST_TEMP_UNIQUE + 1
    assert given.result == 0x42
    name = f"C:\\Temp\\ins{FIRST_TEMP_UNIQUE + 1:X}.TMP"  # the buffer holds the second name
    assert by_name["kernel32.lstrlenA"][0].args[0] == f"C:\\Temp\\ins{FIRST_TEMP_UNIQUE:X}.TMP"
    opened = by_name["kernel32.CreateFileA"][0]
    assert opened.args[0] == name and opened.result not in (0, 0xFFFFFFFF)  # created by GetTempFileName
    assert by_name["user32.MapVirtualKeyW"][0].result == 0x11
    appdata = by_name["kernel32.lstrlenA"][1].args[0]
    assert appdata.startswith("C:\\Users\\") and appdata.endswith("\\AppData\\Roaming")
    assert by_name["shell32.SHGetSpecialFolderPathA"][0].result == 1
    assert by_name["kernel32.lstrlenW"][0].args[0] == "C:\\Windows\\System32"


def test_temp_names_repeat_from_run_to_run():
    steps = [
        ("kernel32.dll!GetTempFileNameW", [Data(0), 0, 0, Data(0x200)]),
        ("kernel32.dll!lstrlenW", [Data(0x200)]),
    ]
    data = "C:\\T\0".encode("utf-16-le")
    names = [[c.args for c in _run(steps, data).api_calls] for _ in range(2)]
    assert names[0] == names[1]
    assert names[0][1][0] == f"C:\\T\\{FIRST_TEMP_UNIQUE:X}.TMP"


def test_time_zone_information_is_the_structure_windows_defines():
    info = time_zone_information()
    assert len(info) == 172
    assert info[4 : 4 + 52].decode("utf-16-le") == "Coordinated Universal Time"


def test_rtl_unwind_unlinks_the_frames_above_its_target_and_pops_its_arguments():
    # Run through InitOnceExecuteOnce's callback (stdcall, 3 arguments): register frames A then B, call
    # RtlUnwind(A, 0, 0, 0x4242), then Sleep(eax), Sleep(fs:[0]), Sleep(A); unlink A and return TRUE.  A
    # handler that popped nothing would leave `ret 12` returning into the stack: the run would fault.
    def body(lay):
        sleep = b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "Sleep"))
        # push 0; push fs:[0]; mov fs:[0], esp
        register = b"\x6a\x00\x64\xff\x35\x00\x00\x00\x00\x64\x89\x25\x00\x00\x00\x00"
        return (
            b"\x53" + register + b"\x89\xe3" + register  # push ebx; frame A; mov ebx, esp; frame B
            + b"\x68\x42\x42\x00\x00\x6a\x00\x6a\x00\x53"  # push 0x4242; push 0; push 0; push ebx
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "RtlUnwind"))
            + b"\x50" + sleep  # Sleep(eax)
            + b"\x64\xa1\x00\x00\x00\x00\x50" + sleep  # Sleep(fs:[0])
            + b"\x53" + sleep  # Sleep(ebx)
            + b"\x83\xc4\x08\x58\x64\xa3\x00\x00\x00\x00\x83\xc4\x04\x5b"  # drop B; fs:[0] = A.next; pop ebx
            + b"\xb8\x01\x00\x00\x00\xc2\x0c\x00"  # mov eax, 1; ret 12
        )  # fmt: skip

    steps = [("kernel32.dll!InitOnceExecuteOnce", [Data(0), Text(0x800), 0, Data(0x10)])]
    program = calls(steps, code_at={0x800: body}, extra_imports=(SLEEP, "kernel32.dll!RtlUnwind"))
    trace = emulate(program, "x", "missingapi")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    value, head, frame_a = [c.args[0] for c in trace.api_calls if c.name == "kernel32.Sleep"]
    assert value == 0x4242 and head == frame_a != 0


def test_dos_date_time_round_trips_through_file_time():
    date, time = (2001 - 1980) << 9 | 9 << 5 | 11, 8 << 11 | 46 << 5 | 40 // 2  # 2001-09-11 08:46:40
    value = dos_date_time_to_file_time(date, time)
    assert value == 126_446_716_000_000_000  # 2001-09-11 08:46:40 UTC in 100 ns ticks since 1601
    assert file_time_to_dos_date_time(value) == (date, time)
    assert file_time_to_dos_date_time(value + 10_000_000) == (date, time)  # two-second resolution
    assert dos_date_time_to_file_time(2 << 5 | 30, 0) is None  # 30 February 1980
    assert file_time_to_dos_date_time(0) is None  # 1601: before MS-DOS dates


def test_file_time_apis_in_a_program():
    trace = _run([
        ("kernel32.dll!DosDateTimeToFileTime", [0x2B2B, 0x4000, Data(0x100)]),
        ("kernel32.dll!FileTimeToLocalFileTime", [Data(0x100), Data(0x110)]),
        ("kernel32.dll!FileTimeToDosDateTime", [Data(0x110), Data(0x120), Data(0x122)]),
        (SLEEP, [Word(0x120)]),  # the date and time, back as MS-DOS words
        ("kernel32.dll!SetFileTime", [0x44, 0, 0, Data(0x110)]),
        ("kernel32.dll!DosDateTimeToFileTime", [0, 0, Data(0x100)]),  # day 0: not a date
    ])  # fmt: skip
    results = {c.name: c.result for c in trace.api_calls if c.name != "kernel32.DosDateTimeToFileTime"}
    converted, invalid = [c.result for c in trace.api_calls if c.name == "kernel32.DosDateTimeToFileTime"]
    assert converted == 1 and invalid == 0
    assert results["kernel32.FileTimeToLocalFileTime"] == results["kernel32.FileTimeToDosDateTime"] == 1
    assert results["kernel32.SetFileTime"] == 1
    (sleep,) = [c.args[0] for c in trace.api_calls if c.name == "kernel32.Sleep"]
    assert sleep == 0x4000_2B2B
