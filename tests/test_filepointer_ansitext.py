"""A file's pointer moved as Windows moves it (`filepointer.py`) and ANSI text helpers answered for code
page 1252 (`ansitext.py`), each through an emulated program."""

import struct

from emu_pe import Data, Word, calls
from runtrace.trace.emulate.ansitext import copied_string
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.emulate.filepointer import signed

GENERIC_READ, OPEN_EXISTING, FILE_BEGIN, FILE_CURRENT, FILE_END = 0x80000000, 3, 0, 1, 2


def _by_name(trace) -> dict[str, list]:
    out: dict[str, list] = {}
    for c in trace.api_calls:
        out.setdefault(c.name.split(".")[-1], []).append(c)
    return out


def test_signed_halves():
    assert signed(0xFFFFFFEA, 32) == -22
    assert signed(0x7FFFFFFF, 32) == 0x7FFFFFFF
    assert signed(0xFFFFFFFF_FFFFFFFC, 64) == -4


def test_the_pointer_of_the_programs_own_file_moves_back_and_refuses_to_go_before_the_start():
    data = bytearray(0x400)
    data[0x3E0:0x3E4] = struct.pack("<I", 0xFFFFFFFF)  # a high half of -1 (with a low of -8: -8)
    h = Word(0x3F0)
    steps = [
        ("kernel32.dll!GetModuleFileNameA", [0, Data(0x100), 0x104]),
        ("kernel32.dll!CreateFileA", [Data(0x100), GENERIC_READ, 1, 0, OPEN_EXISTING, 0x80, 0], Data(0x3F0)),
        ("kernel32.dll!SetFilePointer", [h, -22, 0, FILE_END]),  # a ZIP directory record's place
        ("kernel32.dll!SetFilePointer", [h, -6, 0, FILE_CURRENT]),
        ("kernel32.dll!SetFilePointer", [h, -0x100000, 0, FILE_CURRENT]),  # before the start: fails
        ("kernel32.dll!GetLastError", []),
        ("kernel32.dll!SetFilePointer", [h, 0, 0, FILE_CURRENT]),  # unmoved by the failure
        ("kernel32.dll!SetFilePointer", [h, -8, Data(0x3E0), FILE_END]),
        ("kernel32.dll!lstrlenA", [Word(0x3E0)]),  # the high half written back: 0
        ("kernel32.dll!SetFilePointerEx", [h, 0x10, 0, Data(0x3E8), FILE_BEGIN]),
        ("kernel32.dll!lstrlenA", [Word(0x3E8)]),
        ("kernel32.dll!_llseek", [h, 2, FILE_CURRENT]),  # its origin is honoured
        ("kernel32.dll!_llseek", [h, 4, FILE_BEGIN]),
        ("kernel32.dll!SetFilePointer", [h, 0, 0, 7]),  # no such move method
        ("kernel32.dll!GetLastError", []),
        ("kernel32.dll!SetFilePointer", [0x4321, 0, 0, FILE_BEGIN]),  # no such file
    ]
    program = calls(steps, bytes(data))
    size = len(program)
    by_name = _by_name(emulate(program, "x", "filepointer"))
    results = [c.result for c in by_name["SetFilePointer"]]
    assert results == [size - 22, size - 28, 0xFFFFFFFF, size - 28, size - 8, 0xFFFFFFFF, 0xFFFFFFFF]
    assert [c.result for c in by_name["GetLastError"]] == [131, 87]  # ERROR_NEGATIVE_SEEK, INVALID_PARAMETER
    assert by_name["SetFilePointerEx"][0].result == 1
    assert [c.args[0] for c in by_name["lstrlenA"]] == [0, 0x10]
    assert [c.result for c in by_name["_llseek"]] == [0x12, 4]


def test_char_prev_and_next_stay_within_the_string():
    text = b"C:\\a\x00"
    steps = [
        ("user32.dll!CharPrevA", [Data(0x10), Data(0x10 + len(text) - 1)]),  # from the NUL: the 'a'
        ("user32.dll!CharPrevA", [Data(0x10), Data(0x10)]),  # at the start: the start
        ("user32.dll!CharNextA", [Data(0x10)]),
        ("user32.dll!CharNextA", [Data(0x10 + len(text) - 1)]),  # on the NUL: stays there
        ("user32.dll!CharPrevW", [Data(0x40), Data(0x46)]),
        ("user32.dll!CharNextW", [Data(0x46)]),
        ("kernel32.dll!IsDBCSLeadByte", [0x81]),
    ]
    data = bytearray(0x100)
    data[0x10 : 0x10 + len(text)] = text
    data[0x40:0x48] = "C:\\".encode("utf-16-le") + b"\0\0"
    by_name = _by_name(emulate(calls(steps, bytes(data)), "x", "charwalk"))
    (prev, at_start), (nxt, on_nul) = by_name["CharPrevA"], by_name["CharNextA"]
    assert prev.result == prev.args[1] - 1 and at_start.result == at_start.args[0]
    assert nxt.result == nxt.args[0] + 1 and on_nul.result == on_nul.args[0]
    assert by_name["CharPrevW"][0].result == by_name["CharPrevW"][0].args[1] - 2
    assert by_name["CharNextW"][0].result == by_name["CharNextW"][0].args[0]
    assert by_name["IsDBCSLeadByte"][0].result == 0


def test_wide_char_to_multi_byte_counts_what_it_converts():
    convert = "kernel32.dll!WideCharToMultiByte"
    steps = [
        (convert, [0, 0, Data(0x40), -1, 0, 0, 0, 0]),  # the size query, the NUL counted
        (convert, [0, 0, Data(0x40), -1, Data(0x100), 0x40, 0, 0]),
        ("kernel32.dll!lstrlenA", [Data(0x100)]),
        (convert, [0, 0, Data(0x40), 3, Data(0x180), 0x40, 0, 0]),  # three characters, no NUL
        (convert, [0, 0, Data(0x40), -1, Data(0x1C0), 3, 0, 0]),  # too short a buffer
        ("kernel32.dll!GetLastError", []),
        ("kernel32.dll!lstrlenA", [Data(0x1C8)]),  # untouched beyond the buffer
    ]
    data = bytearray(0x200)
    data[0x40:0x4C] = "héllo".encode("utf-16-le") + b"\0\0"
    data[0x1C0:0x1D0] = b"\xcc" * 8 + b"tail\0\0\0\0"
    by_name = _by_name(emulate(calls(steps, bytes(data)), "x", "w2mb"))
    assert [c.result for c in by_name["WideCharToMultiByte"]] == [6, 6, 3, 0]
    assert by_name["lstrlenA"][0].args[0] == "héllo" and by_name["lstrlenA"][0].result == 5
    assert by_name["GetLastError"][0].result == 122  # ERROR_INSUFFICIENT_BUFFER
    assert by_name["lstrlenA"][1].args[0] == "tail"


def test_multi_byte_to_wide_char_converts_the_bytes_it_is_given():
    # The C runtime's locale set-up converts the 256 bytes 0..255 (no NUL at the end): Speakeasy read
    # on to the next NUL and answered 268, and decoded code page 1252 as UTF-8.
    convert = "kernel32.dll!MultiByteToWideChar"
    steps = [
        (convert, [0, 1, Data(0x000), 0x100, 0, 0]),  # the size query for 256 bytes
        (convert, [0, 1, Data(0x000), 0x100, Data(0x200), 0x100]),
        (convert, [0, 1, Data(0x100), -1, Data(0x400), 0x10]),  # through the NUL
        ("kernel32.dll!lstrlenW", [Data(0x400)]),
        (convert, [0, 1, Data(0x100), -1, Data(0x440), 3]),  # too short a buffer
        ("kernel32.dll!GetLastError", []),
        (convert, [65001, 8, Data(0x120), -1, 0, 0]),  # invalid UTF-8 with MB_ERR_INVALID_CHARS
        ("kernel32.dll!GetLastError", []),
        ("kernel32.dll!lstrlenW", [Data(0x200 + 2 * 0xE9)]),  # byte 0xE9 became U+00E9
        ("kernel32.dll!lstrlenW", [Data(0x200 + 2 * 0x80)]),  # byte 0x80 became the euro sign
    ]
    data = bytearray(0x800)
    data[0x000:0x100] = bytes(range(256))
    data[0x100:0x108] = "héllo".encode("cp1252") + b"\0"
    data[0x120:0x123] = b"\xc3\x28\0"
    by_name = _by_name(emulate(calls(steps, bytes(data)), "x", "mb2w"))
    assert [c.result for c in by_name["MultiByteToWideChar"]] == [256, 256, 6, 0, 0]
    assert by_name["lstrlenW"][0].args[0] == "héllo"
    assert [c.result for c in by_name["GetLastError"]] == [122, 1113]
    assert by_name["lstrlenW"][1].args[0].startswith("éêë")
    assert by_name["lstrlenW"][2].args[0].startswith("€")


def test_load_string_copies_characters_and_a_nul_within_the_buffer():
    assert copied_string("Extract", 40, "utf-16-le") == ("Extract", "Extract\0".encode("utf-16-le"))
    assert copied_string("Extract", 4, "cp1252") == ("Ext", b"Ext\0")  # three characters and the NUL
    assert copied_string("caf\u00e9", 8, "cp1252") == ("caf\u00e9", b"caf\xe9\0")  # the ANSI code page
    assert copied_string("Extract", 1, "cp1252") == ("", b"\0")


def test_load_string_of_an_id_the_program_lacks_fails_with_its_error():
    trace = emulate(
        calls(
            [
                ("user32.dll!LoadStringW", [0, 7, Data(0x10), 0x20]),
                ("kernel32.dll!GetLastError", []),
                ("user32.dll!LoadStringA", [0, 7, Data(0x10), 0x20]),
            ]
        ),  # fmt: skip
        "x",
        "loadstring",
    )
    by_name = _by_name(trace)
    assert by_name["LoadStringW"][0].result == 0 and by_name["GetLastError"][0].result == 1814
    assert by_name["LoadStringA"][0].result == 0
