"""The C runtime's text-to-number functions (`crtnumbers.py`): parsed as the "C" locale does, and
answered inside an emulated program (a configuration parser's `atol`, `strtol` with its end pointer)."""

from __future__ import annotations

import pytest

from emu_pe import Data, Word, ansi, calls, calls_by_name, data_area, utf16
from runtrace.trace.emulate.crtnumbers import parse_long
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason


def _signed(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


@pytest.mark.parametrize(
    "text, base, unsigned, value, consumed",
    [
        ("80\r\n", 10, False, 80, 2),  # Speakeasy's atoi answered 0 here
        ("  -42abc", 10, False, -42, 5),
        ("+7", 10, False, 7, 2),
        ("abc", 10, False, 0, 0),  # nothing parsed: 0, end at the start
        ("", 10, False, 0, 0),
        ("0x1F", 0, False, 31, 4),
        ("0x1F", 16, False, 31, 4),
        ("1F", 16, False, 31, 2),
        ("017", 0, False, 15, 3),  # base 0: a leading 0 is octal
        ("0xg", 0, False, 0, 1),  # "0" parsed, "x" is where it ends
        ("99999999999", 10, False, (1 << 31) - 1, 11),  # saturates
        ("-99999999999", 10, False, -(1 << 31), 12),
        ("4294967295", 10, True, (1 << 32) - 1, 10),
        ("-1", 10, True, (1 << 32) - 1, 2),  # strtoul negates modulo 2**32
        ("z", 36, False, 35, 1),
        ("10", 1, False, 0, 0),  # no such base
    ],
)
def test_parse_long_reads_as_the_c_locale_does(text, base, unsigned, value, consumed):
    got, used = parse_long(text, base, unsigned)
    assert (got if unsigned else _signed(got), used) == (value, consumed)


def test_a_program_reads_its_numbers_with_atol_and_strtol():
    data = data_area(
        (0x000, ansi(" 443\r\n")),
        (0x040, ansi("-12xyz")),
        (0x080, ansi("0x7fz")),
        (0x0C0, utf16("65535 ")),
        (0x200, ansi("ZZZZ")),
    )
    trace = emulate(
        calls(
            [
                ("msvcrt.dll!atol", [Data(0x000)], "cdecl", Data(0x300)),
                ("msvcrt.dll!atoi", [Data(0x040)], "cdecl", Data(0x304)),
                ("msvcrt.dll!strtol", [Data(0x080), Data(0x308), 0], "cdecl"),
                ("kernel32.dll!lstrlenA", [Word(0x308)]),  # the text left after the number: "z"
                ("msvcrt.dll!_wtol", [Data(0x0C0)], "cdecl"),
                ("kernel32.dll!Sleep", [Word(0x300)]),  # the value atol stored
            ],
            data,
        ),
        "x",
        "numbers",
    )
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    by_name = calls_by_name(trace)
    assert by_name["msvcrt.atol"][0].result == 443
    assert _signed(by_name["msvcrt.atoi"][0].result & 0xFFFFFFFF) == -12
    assert by_name["msvcrt.strtol"][0].result == 0x7F
    assert by_name["kernel32.lstrlenA"][0].args[0] == "z"
    assert by_name["msvcrt._wtol"][0].result == 65535
    assert by_name["kernel32.Sleep"][0].args[0] == 443
