"""APIs programs' runtimes call while starting up, which the tracer stubbed with 0 at revision 22
(`startupapis.py`), and Speakeasy handlers that popped too few arguments (`winapi.install`)."""

from __future__ import annotations

from emu_pe import Data, Word, calls, calls_by_name, data_area
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.emulate.startupapis import compare_strings
from runtrace.trace.model import StopReason

NORM_IGNORECASE = 1


def _run(steps: list[tuple], data: bytes, name: str) -> dict[str, list]:
    trace = emulate(calls(steps, data), "x", name)
    # A handler popping the wrong number of arguments leaves the final `ret` on an argument: a fault.
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    return calls_by_name(trace)


def test_compare_string_orders_like_windows():
    data = data_area(
        (0x000, b"TForm1\0"), (0x010, b"tform1\0"), (0x020, "Form2".encode("utf-16-le") + b"\0\0")
    )
    data = data[:0x030] + "form1".encode("utf-16-le") + b"\0\0" + data[0x03C:]
    by_name = _run(
        [
            ("kernel32.dll!CompareStringA", [0x400, NORM_IGNORECASE, Data(0x000), -1, Data(0x010), -1]),
            ("kernel32.dll!CompareStringA", [0x400, 0, Data(0x000), 6, Data(0x010), 6]),
            (
                "kernel32.dll!CompareStringA",
                [0x400, 0, Data(0x000), 5, Data(0x010), -1],
            ),  # "TForm" < "tform1"
            ("kernel32.dll!CompareStringW", [0x400, 0, Data(0x020), -1, Data(0x030), -1]),
            ("kernel32.dll!CompareStringA", [0x400, 0, 0, -1, Data(0x010), -1]),
        ],
        data,
        "compare",
    )
    assert [c.result for c in by_name["kernel32.CompareStringA"]] == [2, 3, 1, 0]
    assert by_name["kernel32.CompareStringW"][0].result == 3  # "Form2" > "form1"


def test_compare_strings_flags():
    assert compare_strings("a-b", "ab", 4) == 2  # NORM_IGNORESYMBOLS
    assert compare_strings("café", "cafe", 2) == 2  # NORM_IGNORENONSPACE
    assert compare_strings("abc", "ABC", 0) == 1  # lower case first
    assert compare_strings("abc", "ABD", 0) == 1  # letters before case
    assert compare_strings("ab\0", "ab", 0) == 2


def test_global_atoms_and_clipboard_formats():
    data = data_area((0x000, b"Delphi00401234\0"), (0x020, b"DELPHI00401234\0"), (0x040, b"#42\0"))
    data = data[:0x060] + "Rich Text Format".encode("utf-16-le") + b"\0\0" + data[0x082:]
    by_name = _run(
        [
            ("kernel32.dll!GlobalAddAtomA", [Data(0x000)], Data(0x100)),
            ("kernel32.dll!GlobalAddAtomA", [Data(0x020)]),  # the same name in another case
            ("kernel32.dll!GlobalFindAtomA", [Data(0x000)]),
            ("kernel32.dll!GlobalAddAtomA", [Data(0x040)]),  # an integer atom
            ("kernel32.dll!GlobalDeleteAtom", [Word(0x100)]),
            ("kernel32.dll!GlobalDeleteAtom", [Word(0x100)]),
            ("kernel32.dll!GlobalFindAtomA", [Data(0x000)]),
            ("user32.dll!RegisterClipboardFormatW", [Data(0x060)]),
            ("user32.dll!RegisterClipboardFormatA", [Data(0x000)]),
            ("user32.dll!RegisterClipboardFormatW", [Data(0x060)]),
        ],
        data,
        "atoms",
    )
    atom = by_name["kernel32.GlobalAddAtomA"][0].result
    assert atom >= 0xC000
    assert [c.result for c in by_name["kernel32.GlobalAddAtomA"]] == [atom, atom, 42]
    assert [c.result for c in by_name["kernel32.GlobalFindAtomA"]] == [atom, 0]  # two adds, two deletes
    assert [c.result for c in by_name["kernel32.GlobalDeleteAtom"]] == [0, 0]
    formats = [
        c.result
        for c in by_name["user32.RegisterClipboardFormatW"] + by_name["user32.RegisterClipboardFormatA"]
    ]
    assert formats[0] == formats[1] >= 0xC000 and formats[2] != formats[0]


def test_affinity_mask_and_memory_status():
    data = data_area((0x100, (64).to_bytes(4, "little")))
    by_name = _run(
        [
            ("kernel32.dll!GetProcessAffinityMask", [-1, Data(0x000), Data(0x010)]),
            ("kernel32.dll!lstrlenA", [Data(0x000)]),
            ("kernel32.dll!lstrlenA", [Data(0x010)]),
            ("kernel32.dll!GlobalMemoryStatusEx", [Data(0x100)]),
            ("kernel32.dll!lstrlenA", [Data(0x10C)]),  # ullTotalPhys's fourth byte on: 8 GiB
            ("kernel32.dll!GlobalMemoryStatusEx", [Data(0x200)]),  # dwLength not set
        ],
        data,
        "affinity",
    )
    assert by_name["kernel32.GetProcessAffinityMask"][0].result == 1
    assert [c.args[0] for c in by_name["kernel32.lstrlenA"]] == ["\x0f", "\x0f", "\x02"]
    assert [c.result for c in by_name["kernel32.GlobalMemoryStatusEx"]] == [1, 0]


def test_line_drawing_pops_its_arguments():
    by_name = _run(
        [
            ("user32.dll!GetDC", [0], Data(0x000)),
            ("gdi32.dll!MoveToEx", [Word(0x000), 10, 20, 0]),
            ("gdi32.dll!LineTo", [Word(0x000), 30, 40]),
            ("kernel32.dll!GetProcessHandleCount", [-1, Data(0x010)]),
        ],
        b"",
        "lines",
    )
    assert by_name["gdi32.MoveToEx"][0].result == 1
