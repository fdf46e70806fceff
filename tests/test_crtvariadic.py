"""The variadic sprintf family, user32's wsprintf and getenv, in a small emulated program."""

from emu_pe import Data, Word, calls
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason


def _data() -> bytes:
    out = bytearray(0x100)
    for offset, text in ((0, b"%s\\SysWOW64|%s|%d"), (0x40, b"windir"), (0x50, b"NO_SUCH_VARIABLE"),
                         (0x70, b"%s-%04x"), (0x80, b"abcdefgh")):  # fmt: skip
        out[offset : offset + len(text)] = text
    return bytes(out)


def test_sprintf_formats_the_variadic_arguments_and_a_null_string_as_null():
    trace = emulate(
        calls([
            ("msvcrt.dll!getenv", [Data(0x40)], "cdecl", Data(0x200)),
            ("msvcrt.dll!getenv", [Data(0x50)], "cdecl"),
            ("msvcrt.dll!sprintf", [Data(0x300), Data(0), Word(0x200), 0, 42], "cdecl"),
            ("kernel32.dll!lstrlenA", [Data(0x300)]),
            ("user32.dll!wsprintfA", [Data(0x400), Data(0x70), Data(0x80), 0xBEEF], "cdecl"),
            ("kernel32.dll!lstrlenA", [Data(0x400)]),
            ("msvcrt.dll!_snprintf", [Data(0x500), 4, Data(0x70), Data(0x80), 1], "cdecl"),
        ], _data()),
        "x",
        "variadic",
    )  # fmt: skip
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    calls_ = {}
    for c in trace.api_calls:
        calls_.setdefault(c.name, []).append(c)
    windir, missing = calls_["msvcrt.getenv"]
    assert windir.result != 0 and missing.result == 0
    formatted, wsprintf = calls_["kernel32.lstrlenA"]
    assert formatted.args[0] == "C:\\Windows\\SysWOW64|(null)|42"
    assert calls_["msvcrt.sprintf"][0].result == len(formatted.args[0])
    assert wsprintf.args[0] == "abcdefgh-beef" and calls_["user32.wsprintfA"][0].result == 13
    assert calls_["msvcrt._snprintf"][0].result & 0xFFFFFFFF == 0xFFFFFFFF  # cut: -1
