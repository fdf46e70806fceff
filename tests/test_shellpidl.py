"""SHGetSpecialFolderLocation and SHGetPathFromIDList (`shellpidl.py`): the path read back from a
folder's PIDL is the one SHGetSpecialFolderPath gives; the desktop's is the empty list; a virtual
folder has a PIDL but no path."""

from __future__ import annotations

from emu_pe import Data, Word, calls
from runtrace.trace.emulate import shellpidl
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

CSIDL_APPDATA, CSIDL_DRIVES, CSIDL_FLAG_CREATE = 0x1A, 0x11, 0x8000


def _run(steps):
    trace = emulate(calls(steps, bytes(0x400)), "x", "pidl")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    return trace.api_calls


def test_the_path_of_a_folder_pidl_agrees_with_sh_get_special_folder_path():
    out = _run(
        [
            ("shell32.dll!SHGetSpecialFolderLocation", [0, CSIDL_APPDATA | CSIDL_FLAG_CREATE, Data(0x10)]),
            ("shell32.dll!SHGetPathFromIDListA", [Word(0x10), Data(0x100)]),
            ("shell32.dll!SHGetPathFromIDListW", [Word(0x10), Data(0x200)]),
            ("kernel32.dll!lstrlenW", [Data(0x200)]),
            ("shell32.dll!SHGetSpecialFolderPathA", [0, Data(0x300), CSIDL_APPDATA, 0]),
        ]
    )
    location, path_a, path_w, length, special = out
    assert location.result == 0 and path_a.result == 1 and path_w.result == 1
    assert path_a.args[1] == path_w.args[1] == length.args[0] == special.args[1]
    assert path_a.args[1].endswith(r"\AppData\Roaming")


def test_a_virtual_folder_has_no_path_and_the_desktop_is_the_empty_list():
    out = _run(
        [
            ("shell32.dll!SHGetSpecialFolderLocation", [0, CSIDL_DRIVES, Data(0x10)]),
            ("shell32.dll!SHGetPathFromIDListA", [Word(0x10), Data(0x100)]),
            ("shell32.dll!SHGetSpecialFolderLocation", [0, 0, Data(0x20)]),
            ("shell32.dll!SHGetPathFromIDListA", [Word(0x20), Data(0x100)]),
        ]
    )
    assert [c.result for c in out] == [0, 0, 0, 1]
    assert out[1].args[1] == "" and out[3].args[1].endswith(r"\Desktop")
    assert shellpidl.folder_pidl(0, "ignored") == b"\0\0"
    assert shellpidl.pidl_path(b"\x06\0ABCD", "desk") is None  # a list the shell made elsewhere
