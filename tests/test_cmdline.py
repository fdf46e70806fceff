"""`CommandLineToArgvW` (cmdline.py): Windows' splitting rules, and the block a program gets."""

from emu_pe import Data, Word, calls
from runtrace.trace.emulate.cmdline import split
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

PROGRAM = r"C:\Users\user\Desktop\program.exe"


def test_backslashes_are_literal_unless_they_precede_a_quote():
    assert split(rf"{PROGRAM} C:\Users\user\Documents\notes.txt") == [
        PROGRAM,
        r"C:\Users\user\Documents\notes.txt",
    ]
    # The examples of Microsoft's documentation of the argument rules.
    assert split(r'p "abc" d e') == ["p", "abc", "d", "e"]
    assert split(r'p a\\\b d"e f"g h') == ["p", r"a\\\b", "de fg", "h"]
    assert split(r"p a\\\"b c d") == ["p", r"a\"b", "c", "d"]
    assert split(r'p a\\\\"b c" d e') == ["p", r"a\\b c", "d", "e"]
    assert split('p "a ""quoted"" word"') == ["p", 'a "quoted" word']


def test_the_program_name_is_taken_as_it_is():
    assert split(r'"C:\Program Files\x\a.exe" -v') == [r"C:\Program Files\x\a.exe", "-v"]
    assert split(r"C:\dir\a\"b.exe c") == [r"C:\dir\a\"b.exe", "c"]  # no escapes in the first argument
    assert split("\ta.exe  \t b  ") == ["", "a.exe", "b"]  # a leading blank: an empty program name
    assert split("") == [PROGRAM]  # empty: the program's own path


def test_an_emulated_program_gets_the_paths_with_their_backslashes():
    command = r"prog.exe C:\Users\user\Documents\notes.txt /x".encode("utf-16-le") + b"\0\0"
    trace = emulate(
        calls([
            ("shell32.dll!CommandLineToArgvW", [Data(0), Data(0x100)], Data(0x104)),
            ("kernel32.dll!Sleep", [Word(0x100)]),  # the count
            ("msvcrt.dll!memcpy", [Data(0x200), Word(0x104), 16], "cdecl"),  # the pointer array
            ("kernel32.dll!lstrlenW", [Word(0x204)]),  # argv[1]
            ("kernel32.dll!lstrlenW", [Word(0x208)]),  # argv[2]
        ], command),
        "x",
        "cmdline",
    )  # fmt: skip
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    sleep = next(c for c in trace.api_calls if c.name == "kernel32.Sleep")
    assert sleep.args[0] == 3
    lengths = [c for c in trace.api_calls if c.name == "kernel32.lstrlenW"]
    assert [c.args[0] for c in lengths] == [r"C:\Users\user\Documents\notes.txt", "/x"]
    assert [c.result for c in lengths] == [33, 2]
