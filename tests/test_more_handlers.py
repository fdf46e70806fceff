"""Handlers for APIs the tracer stubbed at revision 22 (`stubbed.py`, `crtfuncs.py`): each program below
calls one and shows what it wrote through the arguments of a later call (`lstrlenA/W` of a buffer, of
a stored value)."""

from __future__ import annotations

import struct

from emu_pe import Data, Word, ansi, calls, calls_by_name, data_area, utf16
from runtrace.trace.emulate import registry
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

GENERIC_READ, OPEN_EXISTING, INVALID_HANDLE = 0x80000000, 3, 0xFFFFFFFF


def _run(steps: list[tuple], data: bytes, name: str) -> dict[str, list]:
    trace = emulate(calls(steps, data), "x", name)
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    return calls_by_name(trace)


def test_mbstowcs_converts_and_answers_a_size_query():
    data = data_area((0x000, ansi("hello")), (0x200, utf16("ZZZZZZ")))
    by_name = _run(
        [
            ("msvcrt.dll!mbstowcs", [0, Data(0x000), 0], "cdecl"),  # the size needed
            ("msvcrt.dll!mbstowcs", [Data(0x100), Data(0x000), 64], "cdecl"),
            ("kernel32.dll!lstrlenW", [Data(0x100)]),
            ("msvcrt.dll!mbstowcs", [Data(0x200), Data(0x000), 3], "cdecl"),  # no room for the NUL
            ("kernel32.dll!lstrlenW", [Data(0x200)]),
        ],
        data,
        "mbstowcs",
    )
    assert [c.result for c in by_name["msvcrt.mbstowcs"]] == [5, 5, 3]
    assert [c.args[0] for c in by_name["kernel32.lstrlenW"]] == ["hello", "helZZZ"]


def test_wcstombs_converts_and_answers_a_size_query():
    data = data_area((0x040, utf16("wide")), (0x200, ansi("ZZZZZZ")))
    by_name = _run(
        [
            ("msvcrt.dll!wcstombs", [0, Data(0x040), 0], "cdecl"),
            ("msvcrt.dll!wcstombs", [Data(0x100), Data(0x040), 32], "cdecl"),
            ("kernel32.dll!lstrlenA", [Data(0x100)]),
            ("msvcrt.dll!wcstombs", [Data(0x200), Data(0x040), 2], "cdecl"),
            ("kernel32.dll!lstrlenA", [Data(0x200)]),
        ],
        data,
        "wcstombs",
    )
    assert [c.result for c in by_name["msvcrt.wcstombs"]] == [4, 4, 2]
    assert [c.args[0] for c in by_name["kernel32.lstrlenA"]] == ["wide", "wiZZZZ"]


def test_strnicmp_and_wcsnicmp_order_without_case():
    data = data_area(
        (0x000, ansi("ABCdef")), (0x040, ansi("abcxyz")), (0x100, utf16("ABCdef")), (0x140, utf16("abcxyz"))
    )
    by_name = _run(
        [
            ("msvcrt.dll!_strnicmp", [Data(0x000), Data(0x040), 3], "cdecl"),
            ("msvcrt.dll!_strnicmp", [Data(0x000), Data(0x040), 4], "cdecl"),
            ("msvcrt.dll!_strnicmp", [Data(0x040), Data(0x000), 4], "cdecl"),
            ("msvcrt.dll!_wcsnicmp", [Data(0x100), Data(0x140), 3], "cdecl"),
            ("msvcrt.dll!_wcsnicmp", [Data(0x100), Data(0x140), 6], "cdecl"),
        ],
        data,
        "nicmp",
    )
    signed = [
        struct.unpack("<i", struct.pack("<I", c.result & 0xFFFFFFFF))[0] for c in by_name["msvcrt._strnicmp"]
    ]
    assert signed[0] == 0 and signed[1] < 0 < signed[2]
    wide = [
        struct.unpack("<i", struct.pack("<I", c.result & 0xFFFFFFFF))[0] for c in by_name["msvcrt._wcsnicmp"]
    ]
    assert wide[0] == 0 and wide[1] < 0


def test_rename_moves_a_copied_file():
    # The program copies itself to a .dat file, renames that to an .exe and opens both names.
    roaming = f"{registry.PROFILE}\\AppData\\Roaming"
    data = data_area(
        (0x000, ansi(f"{roaming}\\a.dat")),
        (0x080, ansi(f"{roaming}\\b.exe")),
        (0x200, ansi("C:\\no\\such.dat")),
    )
    open_args = [GENERIC_READ, 1, 0, OPEN_EXISTING, 0x80, 0]
    by_name = _run(
        [
            ("kernel32.dll!GetModuleFileNameA", [0, Data(0x100), 260]),
            ("kernel32.dll!CopyFileA", [Data(0x100), Data(0x000), 0]),
            ("msvcrt.dll!rename", [Data(0x000), Data(0x080)], "cdecl"),
            ("msvcrt.dll!rename", [Data(0x200), Data(0x080)], "cdecl"),  # no such file
            ("kernel32.dll!CreateFileA", [Data(0x000), *open_args]),
            ("kernel32.dll!CreateFileA", [Data(0x080), *open_args], Data(0x3F0)),
            ("kernel32.dll!GetFileSize", [Word(0x3F0), 0]),
        ],
        data,
        "rename",
    )
    renames = by_name["msvcrt.rename"]
    assert renames[0].args[:2] == (f"{roaming}\\a.dat", f"{roaming}\\b.exe")
    assert [c.result & 0xFFFFFFFF for c in renames] == [0, 0xFFFFFFFF]
    opened = [c.result for c in by_name["kernel32.CreateFileA"]]
    assert opened[0] == INVALID_HANDLE and opened[1] not in (0, INVALID_HANDLE)
    assert by_name["kernel32.GetFileSize"][0].result > 0x200  # the program's bytes moved with the name


def test_set_file_attributes_needs_an_existing_file_or_folder():
    # (Not a .txt or .exe path: Speakeasy's configuration serves a stand-in file for any of those.)
    data = data_area((0x000, ansi("C:\\no\\such\\file.dat")), (0x080, ansi(registry.PROFILE)))
    by_name = _run(
        [
            ("kernel32.dll!GetModuleFileNameA", [0, Data(0x100), 260]),
            ("kernel32.dll!SetFileAttributesA", [Data(0x100), 0x6]),  # hidden | system
            ("kernel32.dll!SetFileAttributesA", [Data(0x080), 0x2]),
            ("kernel32.dll!SetFileAttributesA", [Data(0x000), 0x2]),
            ("kernel32.dll!GetLastError", []),
        ],
        data,
        "attributes",
    )
    calls_ = by_name["kernel32.SetFileAttributesA"]
    assert [c.result for c in calls_] == [1, 1, 0]
    assert calls_[0].args[0] == "C:\\Users\\user\\Desktop\\program.exe"
    assert calls_[2].args[0] == "C:\\no\\such\\file.dat"
    assert by_name["kernel32.GetLastError"][0].result == 2  # ERROR_FILE_NOT_FOUND


def test_get_user_profile_directory_asks_for_room_then_copies():
    needed = len(registry.PROFILE) + 1
    data = data_area(
        (0x3F0, struct.pack("<I", 4)), (0x3F4, struct.pack("<I", 260)), (0x3F8, struct.pack("<I", 260))
    )
    by_name = _run(
        [
            ("userenv.dll!GetUserProfileDirectoryA", [0xFFFFFFFC, Data(0x100), Data(0x3F0)]),
            ("kernel32.dll!GetLastError", []),
            ("kernel32.dll!lstrlenA", [Word(0x3F0)]),  # the size needed, read back as an argument
            ("userenv.dll!GetUserProfileDirectoryA", [0xFFFFFFFC, Data(0x100), Data(0x3F4)]),
            ("kernel32.dll!lstrlenA", [Data(0x100)]),
            ("userenv.dll!GetUserProfileDirectoryW", [0xFFFFFFFC, Data(0x200), Data(0x3F8)]),
            ("kernel32.dll!lstrlenW", [Data(0x200)]),
        ],
        data,
        "profile",
    )
    assert [c.result for c in by_name["userenv.GetUserProfileDirectoryA"]] == [0, 1]
    assert by_name["kernel32.GetLastError"][0].result == 122  # ERROR_INSUFFICIENT_BUFFER
    assert [c.args[0] for c in by_name["kernel32.lstrlenA"]] == [needed, registry.PROFILE]
    assert by_name["userenv.GetUserProfileDirectoryW"][0].result == 1
    assert by_name["kernel32.lstrlenW"][0].args[0] == registry.PROFILE


def test_strpbrk_finds_the_first_character_of_a_set():
    data = data_area((0x000, ansi("key=value;x")), (0x040, ansi(";=")), (0x080, ansi("#")))
    by_name = _run(
        [
            ("msvcrt.dll!strpbrk", [Data(0x000), Data(0x040)], "cdecl", Data(0x100)),
            ("kernel32.dll!lstrlenA", [Word(0x100)]),
            ("msvcrt.dll!strpbrk", [Data(0x000), Data(0x080)], "cdecl"),  # none of them: NULL
        ],
        data,
        "strpbrk",
    )
    assert by_name["kernel32.lstrlenA"][0].args[0] == "=value;x"
    assert by_name["msvcrt.strpbrk"][1].result == 0


def test_flat_scroll_bar_property_pops_its_arguments_and_fails_without_flat_scroll_bars():
    # A stub that popped none of the 16 bytes would leave the program's `ret` on an argument.
    by_name = _run([("comctl32.dll!FlatSB_SetScrollProp", [0x1AC, 1, 0, 1])], bytes(0x400), "flatsb")
    assert [c.result for c in by_name["comctl32.FlatSB_SetScrollProp"]] == [0]


def test_mbsinc_and_mbsdec_step_one_byte_in_the_ansi_code_page():
    data = data_area((0x000, ansi("ab")))
    by_name = _run(
        [
            ("msvcrt.dll!_mbsinc", [Data(0x000)], "cdecl"),
            ("msvcrt.dll!_mbsdec", [Data(0x000), Data(0x002)], "cdecl"),
            ("msvcrt.dll!_mbsdec", [Data(0x000), Data(0x000)], "cdecl"),  # nothing before the start
        ],
        data,
        "mbsinc",
    )
    (inc,) = by_name["msvcrt._mbsinc"]
    back, none = by_name["msvcrt._mbsdec"]
    assert inc.result == inc.args[0] + 1
    assert back.result == back.args[1] - 1 and none.result == 0
