"""Programs the emulated program writes and starts are run next (tracer revision 22): file copies
carry their contents, and a started copy continues the trace from its own path."""

import struct

import pytest

import emu_pe
from emu_pe import Data, Word, calls
from runtrace.trace.emulate import filedata, processes
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

DATA_VA = emu_pe.IMAGE_BASE["i386"] + emu_pe.DATA_RVA + emu_pe.DATA_SIZE // 2
GENERIC_READ, OPEN_EXISTING, INVALID_HANDLE = 0x80000000, 3, 0xFFFFFFFF


def _text(*strings: tuple[int, str]) -> bytes:
    """Data holding NUL-terminated strings at the given offsets."""
    out = bytearray(0x400)
    for offset, s in strings:
        out[offset : offset + len(s) + 1] = s.encode() + b"\0"
    return bytes(out)


def _installer() -> bytes:
    # Copies its own file to a folder (a path spelled with a doubled backslash, as programs that join
    # strings write them), starts the copy with an argument, and returns.  The copy does the same from
    # its new path: its copy is itself and its start repeats it, so the run ends there.
    data = _text((0x000, "C:\\Windows\\temp\\\\copy.exe"), (0x080, "C:\\Windows\\temp\\copy.exe -installed"))
    return calls(
        [
            ("kernel32.dll!GetModuleFileNameA", [0, Data(0x100), 260]),
            ("kernel32.dll!CopyFileA", [Data(0x100), Data(0x000), 0]),
            ("kernel32.dll!CreateProcessA", [0, Data(0x080), 0, 0, 0, 0, 0, 0, Data(0x300), Data(0x380)]),
        ],
        data=data,
    )


def test_a_program_that_installs_itself_runs_again_from_its_copy():
    trace = emulate(_installer(), "x", "installer")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    started = [e for e in trace.meta.events if e["type"] == "started_process"]
    assert started == [
        {
            "type": "started_process",
            "path": "C:\\Windows\\temp\\copy.exe",
            "command_line": "C:\\Windows\\temp\\copy.exe -installed",
            "first_visit": started[0]["first_visit"],
        }
    ]
    # The copy asks where it is and is told its own path; the trace goes on into it.
    paths = [c.args[1] for c in trace.api_calls if c.name == "kernel32.GetModuleFileNameA"]
    assert paths == ["C:\\Users\\user\\Desktop\\program.exe", "C:\\Windows\\temp\\copy.exe"]
    kinds = [(e.kind, e.name) for e in trace.meta.entry_points]
    assert kinds == [("entry", "entry"), ("process", "C:\\Windows\\temp\\copy.exe")]
    process_start = trace.meta.entry_points[1].first_visit
    assert process_start == started[0]["first_visit"] == len(trace.visits) // 2
    assert all(c.position >= process_start for c in trace.api_calls[3:])
    # The same code at the same address is one block of the trace, visited by both processes.
    assert sorted(set(trace.visits[:process_start])) == sorted(set(trace.visits[process_start:]))
    assert any(e["event"] == "create" for e in trace.meta.behaviour["processes"])


def test_a_started_program_the_run_did_not_write_is_not_followed():
    data = _text((0x000, "C:\\Windows\\system32\\cmd.exe /c echo"))
    trace = emulate(
        calls(
            [("kernel32.dll!CreateProcessA", [0, Data(0), 0, 0, 0, 0, 0, 0, Data(0x300), Data(0x380)])], data
        ),
        "x",
        "cmd",
    )
    assert not [e for e in trace.meta.events if e["type"].startswith("started_process")]
    assert [e.kind for e in trace.meta.entry_points] == ["entry"]


def test_copies_and_moves_carry_the_contents():
    data = _text((0x000, "C:\\data\\a.dat"), (0x040, "C:\\data\\b.dat"), (0x080, "C:\\data\\none.dat"))
    program = calls(
        [
            ("kernel32.dll!GetModuleFileNameA", [0, Data(0x100), 260]),
            ("kernel32.dll!CopyFileA", [Data(0x100), Data(0x000), 0]),
            ("kernel32.dll!MoveFileA", [Data(0x000), Data(0x040)]),
            (
                "kernel32.dll!CreateFileA",
                [Data(0x040), GENERIC_READ, 1, 0, OPEN_EXISTING, 0x80, 0],
                Data(0x3F0),
            ),
            ("kernel32.dll!GetFileSize", [Word(0x3F0), 0]),
            ("kernel32.dll!CreateFileA", [Data(0x000), GENERIC_READ, 1, 0, OPEN_EXISTING, 0x80, 0]),
            ("kernel32.dll!CopyFileA", [Data(0x080), Data(0x000), 0]),
        ],
        data,
    )
    trace = emulate(program, "x", "copies")
    by_name = {}
    for c in trace.api_calls:
        by_name.setdefault(c.name, []).append(c)
    assert by_name["kernel32.CopyFileA"][0].args[:2] == (
        "C:\\Users\\user\\Desktop\\program.exe",
        "C:\\data\\a.dat",
    )
    assert by_name["kernel32.CopyFileA"][0].result == 1
    assert by_name["kernel32.MoveFileA"][0].result == 1
    assert by_name["kernel32.GetFileSize"][0].result == len(program)  # the moved copy holds the program
    assert by_name["kernel32.CreateFileA"][1].result == INVALID_HANDLE  # and its old name is gone
    assert by_name["kernel32.CopyFileA"][1].result == 0  # a source that does not exist: failure


def test_shell_execute_ex_reports_success_and_its_start_is_followed():
    # SHELLEXECUTEINFOA (x86): cbSize, fMask (SEE_MASK_NOCLOSEPROCESS), hwnd, lpVerb, lpFile,
    # lpParameters, lpDirectory, nShow, hInstApp, ..., hProcess at +56.
    info = struct.pack(
        "<3I4I", 60, 0x40, 0, DATA_VA + 0x200, DATA_VA + 0x210, DATA_VA + 0x240, DATA_VA + 0x250
    )
    data = bytearray(
        _text((0x000, "C:\\t\\me.exe"), (0x200, "open"), (0x210, "me.exe"), (0x240, "/s"), (0x250, "C:\\t"))
    )
    data[0x180 : 0x180 + len(info)] = info
    program = calls(
        [
            ("kernel32.dll!GetModuleFileNameA", [0, Data(0x100), 260]),
            ("kernel32.dll!CopyFileA", [Data(0x100), Data(0x000), 0]),
            ("shell32.dll!ShellExecuteExA", [Data(0x180)]),
            ("kernel32.dll!lstrlenA", [Word(0x180 + 32)]),  # hInstApp, read back as an argument
            ("kernel32.dll!lstrlenA", [Word(0x180 + 56)]),  # hProcess
        ],
        bytes(data),
    )
    trace = emulate(program, "x", "shellexecuteex")
    first = next(c for c in trace.api_calls if c.name == "shell32.ShellExecuteExA")
    assert first.result == 1 and first.args == (0, "open", "me.exe", "/s", "C:\\t")
    lengths = [c.args[0] for c in trace.api_calls if c.name == "kernel32.lstrlenA"]
    assert lengths[0] == processes.SHELL_EXECUTE_OK and lengths[1] != 0
    started = [e for e in trace.meta.events if e["type"] == "started_process"]
    assert [(e["path"], e["command_line"]) for e in started] == [("C:\\t\\me.exe", '"me.exe" /s')]


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (processes.Start("", r'"C:\a b\c.exe" -x'), [r"C:\a b\c.exe"]),
        (
            processes.Start("", r"C:\a b\c -x"),
            [r"C:\a", r"C:\a.exe", r"C:\a b\c", r"C:\a b\c.exe", r"C:\a b\c -x"],
        ),
        (processes.Start(r"C:\p.exe", "ignored"), [r"C:\p.exe"]),
        (
            processes.Start("", "tool"),
            [r"C:\here\tool", r"C:\here\tool.exe", r"C:\sys\tool", r"C:\sys\tool.exe"],
        ),
    ],
)
def test_image_candidates_in_the_order_windows_tries_them(start, expected):
    got = processes.image_candidates(start, [r"C:\here", r"C:\sys"])
    assert got[: len(expected)] == expected


def test_starts_read_from_the_recorded_calls():
    records = [
        (0, "KERNEL32.CreateProcessW", 0, True, ("", "a.exe b", 0), 1),
        (1, "kernel32.CreateProcessInternalW", 0, True, (0, "C:\\x.exe", "x", 0), 1),
        (2, "KERNEL32.WinExec", 0, True, ("c.exe", 0), 33),
        (3, "SHELL32.ShellExecuteA", 0, True, (0, "print", "d.txt", "", "", 0), 33),
        (4, "SHELL32.ShellExecuteW", 0, True, (0, "open", "e.exe", "-q", "C:\\e", 1), 33),
        (5, "KERNEL32.Sleep", 0, True, (1,), 0),
    ]
    assert list(processes.starts(records)) == [
        processes.Start("", "a.exe b"),
        processes.Start("C:\\x.exe", "x"),
        processes.Start("", "c.exe"),
        processes.Start("e.exe", '"e.exe" -q', "C:\\e"),
    ]


def test_paths_compare_as_windows_compares_them():
    assert filedata.path_key('"C:\\Windows\\\\Temp//a.EXE" ') == "c:\\windows\\temp\\a.exe"
    assert filedata.clean_path("\\\\server\\\\share\\x") == "\\\\server\\share\\x"


def test_a_started_program_that_cannot_be_loaded_ends_the_trace_with_its_parent():
    # The run writes two bytes of "MZ" and a little junk, then starts it: the parent's trace is kept and an
    # event says why nothing followed.
    data = bytearray(_text((0x000, "C:\\t\\junk.exe")))
    data[0x200:0x208] = b"MZ\x90\x00junk"
    program = calls(
        [
            ("kernel32.dll!CreateFileA", [Data(0), 0x40000000, 0, 0, 2, 0x80, 0], Data(0x3F0)),
            ("kernel32.dll!WriteFile", [Word(0x3F0), Data(0x200), 8, Data(0x3F4), 0]),
            ("kernel32.dll!CloseHandle", [Word(0x3F0)]),
            ("kernel32.dll!CreateProcessA", [0, Data(0), 0, 0, 0, 0, 0, 0, Data(0x300), Data(0x380)]),
        ],
        bytes(data),
    )
    trace = emulate(program, "x", "junk")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    errors = [e for e in trace.meta.events if e["type"] == "started_process_error"]
    assert len(errors) == 1 and errors[0]["error"]
    assert [e.kind for e in trace.meta.entry_points] == ["entry"]
