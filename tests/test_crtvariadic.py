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


def test_wvsprintf_is_stdcall_and_reads_its_va_list():
    # The va_list at 0x90 holds "%s-%04x"'s two arguments (a NULL string, 0xBEEF); Speakeasy's cdecl
    # handler left the 12 bytes of stdcall arguments on the stack.
    data = bytearray(_data()) + bytearray(0x100)
    data[0x90:0x98] = (0).to_bytes(4, "little") + (0xBEEF).to_bytes(4, "little")
    steps = [
        ("user32.dll!wvsprintfA", [Data(0x400), Data(0x70), Data(0x90)]),
        ("kernel32.dll!lstrlenA", [Data(0x400)]),
    ]
    trace = emulate(calls(steps, bytes(data)), "x", "wvsprintf")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    (call,) = [c for c in trace.api_calls if c.name == "user32.wvsprintfA"]
    text = [c for c in trace.api_calls if c.name == "kernel32.lstrlenA"][0].args[0]
    assert text == "(null)-beef" and call.result == len(text)
