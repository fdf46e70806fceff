"""Initialisation files (`inifiles.py`): what a program writes it reads back, a file it dropped is read
as the profile functions read one, and a missing key gives the default."""

from __future__ import annotations

from emu_pe import Data, Word, ansi, calls, calls_by_name, data_area, utf16
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.emulate.inifiles import parse
from runtrace.trace.model import StopReason

GENERIC_WRITE, CREATE_ALWAYS = 0x40000000, 2


def test_parse_reads_sections_and_keys_without_case():
    sections = parse("; comment\n[Main]\n Id = 42 \nid=ignored\n[Other]\nx=1\n")
    assert sections["main"]["id"] == ("Id", "42")
    assert set(sections) == {"main", "other"}


def test_a_program_reads_back_what_it_wrote_and_what_its_file_holds():
    path = "C:\\Users\\user\\AppData\\Roaming\\c.ini"
    ini_text = b"[cfg]\r\nserver=10.0.0.1\r\nport=8080\r\n"
    data = data_area(
        (0x000, ansi("cfg")), (0x010, ansi("server")), (0x020, ansi("port")), (0x030, ansi("bot")),
        (0x040, ansi(path)), (0x080, ansi("x1")), (0x090, ansi("dflt")),
        (0x0A0, ini_text), (0x0E0, ansi("missing")),
        (0x300, utf16("cfg")), (0x320, utf16("bot")), (0x340, utf16(path)),
        size=0x800,
    )  # fmt: skip
    ini = Data(0x040)
    steps = [
        ("kernel32.dll!CreateFileA", [ini, GENERIC_WRITE, 0, 0, CREATE_ALWAYS, 0x80, 0], Data(0x400)),
        ("kernel32.dll!WriteFile", [Word(0x400), Data(0x0A0), len(ini_text), Data(0x404), 0]),
        ("kernel32.dll!CloseHandle", [Word(0x400)]),
        ("kernel32.dll!WritePrivateProfileStringA", [Data(0x000), Data(0x030), Data(0x080), ini]),
        (
            "kernel32.dll!GetPrivateProfileStringA",
            [Data(0x000), Data(0x010), Data(0x090), Data(0x500), 0x40, ini],
        ),
        ("kernel32.dll!lstrlenA", [Data(0x500)]),
        ("kernel32.dll!GetPrivateProfileIntA", [Data(0x000), Data(0x020), 5, ini]),
        (
            "kernel32.dll!GetPrivateProfileStringW",
            [Data(0x300), Data(0x320), 0, Data(0x600), 0x40, Data(0x340)],
        ),
        ("kernel32.dll!lstrlenW", [Data(0x600)]),
        (
            "kernel32.dll!GetPrivateProfileStringA",
            [Data(0x000), Data(0x0E0), Data(0x090), Data(0x580), 0x40, ini],
        ),
        ("kernel32.dll!lstrlenA", [Data(0x580)]),
    ]
    trace = emulate(calls(steps, data), "x", "ini")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    by_name = calls_by_name(trace)
    assert by_name["kernel32.WritePrivateProfileStringA"][0].result == 1
    assert [c.args[0] for c in by_name["kernel32.lstrlenA"]] == [
        "10.0.0.1",
        "dflt",
    ]  # the file's, the default
    assert by_name["kernel32.GetPrivateProfileIntA"][0].result == 8080
    assert by_name["kernel32.lstrlenW"][0].args[0] == "x1"  # written by A, read by W
