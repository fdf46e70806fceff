"""Environment variables (`environment.py`): the two-call size pattern of GetEnvironmentVariable and
ExpandEnvironmentStrings inside an emulated program, and the expansion rules."""

from __future__ import annotations

import pytest

from emu_pe import Data, ansi, calls, calls_by_name, data_area, utf16
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.emulate.environment import ERROR_ENVVAR_NOT_FOUND, expand
from runtrace.trace.model import StopReason

VARIABLES = {"temp": "C:\\T", "windir": "C:\\Windows"}


@pytest.mark.parametrize(
    "text, expanded",
    [
        ("%TEMP%\\a.exe", "C:\\T\\a.exe"),
        ("%temp%%WinDir%", "C:\\TC:\\Windows"),
        ("%TEMP%;%TEMP%", "C:\\T;C:\\T"),  # every occurrence
        ("%NOPE%\\x", "%NOPE%\\x"),  # undefined: kept
        ("100%%TEMP%", "100%C:\\T"),  # "%%" names nothing; its second % opens %TEMP%
        ("50% off", "50% off"),
        ("", ""),
    ],
)
def test_expansion_follows_windows_rules(text, expanded):
    assert expand(text, VARIABLES) == expanded


def test_a_program_asks_for_the_size_then_expands():
    data = data_area((0x000, ansi("%TEMP%\\x.exe")), (0x040, utf16("TEMP")), (0x080, ansi("NO_SUCH")))
    trace = emulate(
        calls(
            [
                ("kernel32.dll!ExpandEnvironmentStringsA", [Data(0x000), 0, 0]),  # the size needed
                ("kernel32.dll!ExpandEnvironmentStringsA", [Data(0x000), Data(0x100), 4]),  # too small
                ("kernel32.dll!lstrlenA", [Data(0x100)]),  # nothing written
                ("kernel32.dll!ExpandEnvironmentStringsA", [Data(0x000), Data(0x100), 0x100]),
                ("kernel32.dll!lstrlenA", [Data(0x100)]),
                ("kernel32.dll!GetEnvironmentVariableW", [Data(0x040), 0, 0]),
                ("kernel32.dll!GetEnvironmentVariableW", [Data(0x040), Data(0x200), 0x80]),
                ("kernel32.dll!GetEnvironmentVariableA", [Data(0x080), Data(0x300), 0x80]),
                ("kernel32.dll!GetLastError", []),
            ],
            data,
        ),
        "x",
        "environment",
    )
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    by_name = calls_by_name(trace)
    expanded = by_name["kernel32.lstrlenA"][1].args[0]
    assert expanded.endswith("\\x.exe") and "%" not in expanded
    sizes = [c.result for c in by_name["kernel32.ExpandEnvironmentStringsA"]]
    assert sizes == [len(expanded) + 1] * 3
    assert by_name["kernel32.lstrlenA"][0].args[0] == ""
    temp = expanded[: -len("\\x.exe")]
    assert [c.result for c in by_name["kernel32.GetEnvironmentVariableW"]] == [len(temp) + 1, len(temp)]
    assert by_name["kernel32.GetEnvironmentVariableA"][0].result == 0
    assert by_name["kernel32.GetLastError"][0].result == ERROR_ENVVAR_NOT_FOUND
