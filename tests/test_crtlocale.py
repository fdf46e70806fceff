"""The C runtime's character classes and multibyte code page (`crtlocale.py`), and `_XcptFilter`."""

from __future__ import annotations

import struct

from emu_pe import DATA_RVA, DATA_SIZE, IMAGE_BASE, Data, Word, calls
from runtrace.trace.emulate import crtlocale
from runtrace.trace.emulate.emulator import _Session
from runtrace.trace.settings import TracerSettings

DATA = IMAGE_BASE["i386"] + DATA_RVA + DATA_SIZE // 2  # `Data(0)`
MB_CP_ANSI, EXCEPTION_ACCESS_VIOLATION = -3, 0xC0000005


def _session(steps, data: bytes) -> _Session:
    s = _Session(calls(steps, data), TracerSettings())
    s.run()
    return s


def test_pctype_points_at_the_c_locale_table():
    data = b"msvcrt.dll\0".ljust(0x10, b"\0") + b"_pctype\0"
    s = _session(
        [
            ("kernel32.dll!LoadLibraryA", [Data(0)], Data(0x100)),
            ("kernel32.dll!GetProcAddress", [Word(0x100), Data(0x10)], Data(0x104)),
            ("msvcrt.dll!memcpy", [Data(0x108), Word(0x104), 4], "cdecl"),  # the pointer _pctype holds
            ("msvcrt.dll!memcpy", [Data(0x110), Word(0x108), 0x100], "cdecl"),  # the table it points at
        ],
        data,
    )
    table = struct.unpack("<128H", s.emu.mem_read(DATA + 0x110, 0x100))
    upper, lower, digit, space, punct, control, blank, hexa = 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80
    assert table[ord("0")] & 0xFF == digit | hexa and table[ord("9")] & 0xFF == digit | hexa
    assert table[ord("A")] & 0xFF == upper | hexa and table[ord("g")] & 0xFF == lower
    assert table[ord(" ")] == space | blank and table[ord("\t")] == space | control
    assert table[ord("!")] == punct and table[0x7F] == control and table[0] == control
    # `_ctype` starts one entry earlier, with EOF's zero.
    assert crtlocale.table()[:2] == b"\0\0" and crtlocale.table()[2:4] == struct.pack("<H", control)


def test_isctype_setmbcp_and_the_start_up_filter():
    s = _session(
        [
            ("msvcrt.dll!_isctype", [ord("7"), 4], "cdecl"),
            ("msvcrt.dll!_isctype", [0xE9, 3], "cdecl"),  # é: no class in the "C" locale
            ("msvcrt.dll!_setmbcp", [MB_CP_ANSI], "cdecl"),
            ("msvcrt.dll!_getmbcp", [], "cdecl"),
            ("msvcrt.dll!_setmbcp", [12345], "cdecl"),  # no such code page: fails, keeps the old one
            ("msvcrt.dll!_getmbcp", [], "cdecl"),
            ("msvcrt.dll!_XcptFilter", [EXCEPTION_ACCESS_VIOLATION, 0], "cdecl"),
        ],
        b"",
    )
    calls_made = [(name.split(".")[1], supported, rv) for _, name, _, supported, _, rv in s.api_calls]
    assert all(supported for _, supported, _ in calls_made)
    assert [rv & 0xFFFFFFFF for _, _, rv in calls_made] == [4, 0, 0, 1252, 0xFFFFFFFF, 1252, 0]
