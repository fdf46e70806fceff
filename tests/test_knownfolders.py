"""SHGetKnownFolderPath (knownfolders.py) writes the folder's path for a known FOLDERID."""

import uuid

from emu_pe import Data, Word, calls
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

ROAMING_APP_DATA = uuid.UUID("3eb685db-65f9-4cf6-a03a-e3ef65729f3d").bytes_le


def test_known_and_unknown_folders():
    data = ROAMING_APP_DATA.ljust(0x20, b"\0") + uuid.UUID(int=1).bytes_le
    trace = emulate(
        calls([
            ("shell32.dll!SHGetKnownFolderPath", [Data(0), 0, 0, Data(0x100)]),
            ("kernel32.dll!lstrlenW", [Word(0x100)]),
            ("shell32.dll!SHGetKnownFolderPath", [Data(0x20), 0, 0, Data(0x104)]),
            ("kernel32.dll!Sleep", [Word(0x104)]),
        ], data),
        "x",
        "knownfolders",
    )  # fmt: skip
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    known, length, unknown, sleep = trace.api_calls
    assert known.result == 0 and unknown.result == 0x80070057
    assert length.args[0].startswith("C:\\Users\\") and length.args[0].endswith("\\AppData\\Roaming")
    assert sleep.args[0] == 0  # no path for an unknown folder
