"""shlwapi's path functions (`shellpaths.py`): the editing rules, and a program that builds the path of
its data file, finds it missing, creates it and finds it there."""

from __future__ import annotations

import pytest

from emu_pe import Data, calls, calls_by_name, data_area, utf16
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.emulate.shellpaths import combine, get_args, remove_file_spec
from runtrace.trace.model import StopReason

GENERIC_WRITE, CREATE_ALWAYS = 0x40000000, 2


@pytest.mark.parametrize(
    "path, folder",
    [("C:\\a\\b.exe", "C:\\a"), ("C:\\b.exe", "C:\\"), ("C:\\", "C:\\"), ("b.exe", ""), ("\\b", "\\")],
)
def test_remove_file_spec(path, folder):
    assert remove_file_spec(path) == folder


@pytest.mark.parametrize(
    "folder, more, joined",
    [
        ("C:\\Windows", "system32\\x.dll", "C:\\Windows\\system32\\x.dll"),
        ("C:\\Windows\\", "..\\x.dll", "C:\\x.dll"),
        ("C:\\Windows", "D:\\y.exe", "D:\\y.exe"),  # an absolute second part wins
        ("C:\\Windows", "\\y.exe", "C:\\y.exe"),  # rooted: the first part's drive
        ("", "a.txt", "a.txt"),
    ],
)
def test_combine(folder, more, joined):
    assert combine(folder, more) == joined


def test_get_args_skips_a_quoted_program_name():
    text = '"C:\\Program Files\\a.exe" -s x'
    assert text[get_args(text) :] == "-s x"
    assert get_args("a.exe") == len("a.exe")


def test_a_program_finds_its_data_file_after_writing_it():
    data = data_area((0x200, utf16("x.dat")), (0x240, utf16("C:\\Windows\\system32")), size=0x800)
    trace = emulate(
        calls(
            [
                ("kernel32.dll!GetSystemDirectoryW", [Data(0x000), 0x100]),
                ("shlwapi.dll!PathAddBackslashW", [Data(0x000)]),
                ("shlwapi.dll!PathAppendW", [Data(0x000), Data(0x200)]),
                ("shlwapi.dll!PathFileExistsW", [Data(0x000)]),
                ("kernel32.dll!CreateFileW", [Data(0x000), GENERIC_WRITE, 0, 0, CREATE_ALWAYS, 0x80, 0]),
                ("shlwapi.dll!PathFileExistsW", [Data(0x000)]),
                ("shlwapi.dll!PathRemoveFileSpecW", [Data(0x000)]),
                ("kernel32.dll!lstrlenW", [Data(0x000)]),
                ("shlwapi.dll!PathIsDirectoryW", [Data(0x000)]),
                ("shlwapi.dll!PathCombineW", [Data(0x400), Data(0x240), Data(0x200)]),
                ("kernel32.dll!lstrlenW", [Data(0x400)]),
            ],
            data,
        ),
        "x",
        "paths",
    )
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    by_name = calls_by_name(trace)
    system = by_name["kernel32.GetSystemDirectoryW"][0].args[0]
    assert by_name["shlwapi.PathAddBackslashW"][0].result != 0
    exists = by_name["shlwapi.PathFileExistsW"]
    assert [c.args[0] for c in exists] == [f"{system}\\x.dat"] * 2
    assert [c.result for c in exists] == [0, 1]
    assert [c.args[0] for c in by_name["kernel32.lstrlenW"]] == [system, "C:\\Windows\\system32\\x.dat"]
    assert by_name["shlwapi.PathIsDirectoryW"][0].result == 0x10
    assert by_name["shlwapi.PathRemoveFileSpecW"][0].result == 1
