"""The handlers of missingapi.py (tracer revision 20), in small emulated programs and on their own."""

import pytest

from emu_pe import Data, Word, calls
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.emulate.missingapi import (
    FIRST_TEMP_UNIQUE,
    MAPVK_VK_TO_CHAR,
    MAPVK_VK_TO_VSC,
    MAPVK_VSC_TO_VK,
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
