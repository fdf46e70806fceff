"""The C runtime functions of crtfuncs.py (tracer revision 16), in small emulated programs (cdecl)."""

from emu_pe import Data, Word, calls
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

DOCUMENT = b"C:\\Users\\user\\Documents\\notes.txt\0"  # every .txt path exists in Speakeasy's file system


def _run(steps, data=b""):
    steps = [
        (name, args, *(["cdecl"] if name.startswith("msvcrt") else []), *more) for name, args, *more in steps
    ]
    trace = emulate(calls(steps, data), "x", "crt")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    return trace


def _results(trace) -> list[int]:
    return [c.result for c in trace.api_calls]


def test_operator_new_returns_distinct_blocks_and_delete_returns():
    trace = _run([
        ("msvcrt.dll!??2@YAPAXI@Z", [0x20], Data(0)),
        ("msvcrt.dll!??_U@YAPAXI@Z", [0x100]),
        ("msvcrt.dll!??3@YAXPAX@Z", [Word(0)]),
    ])  # fmt: skip
    first, second, _ = _results(trace)
    assert first >= 0x10000 and second >= 0x10000 and abs(first - second) >= 0x20


def test_string_functions():
    data = b"C:\\dir\\file.exe\0".ljust(0x40, b"\0") + b"\\sub\0".ljust(0x10, b"\0")
    wide = "C:\\dir\\file.exe\0".encode("utf-16-le")
    data = data.ljust(0x80, b"\0") + wide
    trace = _run([
        ("msvcrt.dll!strncat", [Data(0), Data(0x40), 3]),  # "C:\\dir\\file.exe\\su"
        ("msvcrt.dll!_strdup", [Data(0)]),
        ("kernel32.dll!lstrlenA", [Data(0)]),
        ("msvcrt.dll!wcsrchr", [Data(0x80), ord("\\")]),
        ("msvcrt.dll!wcschr", [Data(0x80), ord("\\")]),
        ("msvcrt.dll!wcschr", [Data(0x80), ord("#")]),
    ], data)  # fmt: skip
    cat, dup, length, last, first, none = _results(trace)
    assert cat == trace.api_calls[0].args[0]  # strncat returns its destination
    assert trace.api_calls[2].args[0] == "C:\\dir\\file.exe\\su" and length == 18
    assert dup not in (0, cat)
    base = last - 2 * len("C:\\dir")  # the address of the wide string
    assert first == base + 2 * len("C:") and none == 0


def test_a_file_is_written_read_back_and_measured():
    data = DOCUMENT.ljust(0x40, b"\0") + b"C:\\Temp\\out.bin\0".ljust(0x20, b"\0")
    data += b"w\0\0\0r\0\0\0" + b"hello, file\0".ljust(0x10, b"\0") + b"%d-%s\0".ljust(0x10, b"\0")
    data += b"C:\\nowhere\\gone.bin\0"
    w, r, hello, fmt, missing = 0x60, 0x64, 0x68, 0x78, 0x88
    trace = _run([
        ("msvcrt.dll!fopen", [Data(0x40), Data(w)], Data(0x200)),
        ("msvcrt.dll!fwrite", [Data(hello), 1, 11, Word(0x200)]),
        ("msvcrt.dll!fputc", [ord("!"), Word(0x200)]),
        ("msvcrt.dll!fprintf", [Word(0x200), Data(fmt), 42, Data(hello)]),
        ("msvcrt.dll!fclose", [Word(0x200)]),
        ("msvcrt.dll!fopen", [Data(0x40), Data(r)], Data(0x204)),
        ("msvcrt.dll!fseek", [Word(0x204), 0, 2]),  # SEEK_END
        ("msvcrt.dll!ftell", [Word(0x204)]),
        ("msvcrt.dll!rewind", [Word(0x204)]),
        ("msvcrt.dll!fgets", [Data(0x300), 6, Word(0x204)]),
        ("msvcrt.dll!fgetc", [Word(0x204)]),
        ("msvcrt.dll!fread", [Data(0x300), 1, 0x100, Word(0x204)]),
        ("msvcrt.dll!feof", [Word(0x204)]),
        ("msvcrt.dll!fgetc", [Word(0x204)]),
        ("msvcrt.dll!fopen", [Data(missing), Data(r)]),
        ("msvcrt.dll!fopen", [Data(0), Data(r)], Data(0x208)),
        ("msvcrt.dll!fread", [Data(0x400), 1, 0x100, Word(0x208)]),
    ], data)  # fmt: skip
    got = dict(enumerate(_results(trace)))
    assert got[0] and got[1] == 11 and got[2] == ord("!")
    assert got[3] == len("42-hello, file")  # fprintf's length
    written = 11 + 1 + len("42-hello, file")
    assert got[7] == written  # ftell at the end
    assert got[9] == trace.api_calls[9].args[0]  # fgets returns its buffer: "hello" (5 + NUL)
    assert got[10] == ord(",")
    assert got[11] == written - 6  # the rest
    assert got[12] == 1 and got[13] == 0xFFFFFFFF  # end of file, EOF
    assert got[14] == 0  # a missing file does not open
    assert got[15] and got[16] > 0  # the document has contents


def test_printf_returns_the_formatted_length():
    data = b"%s=%d %x\n\0".ljust(0x10, b"\0") + b"key\0"
    trace = _run([("msvcrt.dll!printf", [Data(0), Data(0x10), 1234, 0xBEEF])], data)
    assert _results(trace) == [len("key=1234 beef\n")]


def test_integers_are_written_as_text_and_the_buffer_returned():
    # Speakeasy's _itoa wrote nothing and returned nothing (eax as it was): a program naming a file after
    # a random number used that as a pointer (revision 17).
    trace = _run([
        ("msvcrt.dll!_itoa", [0xFFFFFFD6, Data(0), 10], Data(0x40)),  # -42
        ("kernel32.dll!lstrcmpA", [Word(0x40), Data(0)]),  # the buffer came back
        ("msvcrt.dll!_ultoa", [0xFF, Data(0x10), 16]),
        ("kernel32.dll!lstrlenA", [Data(0x10)]),
        ("msvcrt.dll!_itow", [1234, Data(0x20), 10]),
        ("kernel32.dll!lstrlenW", [Data(0x20)]),
    ])  # fmt: skip
    itoa, compare, ultoa, hex_text, _, wide_text = trace.api_calls
    assert itoa.result == itoa.args[1] and compare.args == ("-42", "-42") and compare.result == 0
    assert ultoa.result == ultoa.args[1] and hex_text.args[0] == "ff"
    assert wide_text.args[0] == "1234" and wide_text.result == 4
