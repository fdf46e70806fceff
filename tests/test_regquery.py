"""RegQueryValueEx answered as Windows answers it (`regquery.py`): the type, the data in the caller's width
with its NUL, the size needed, ERROR_MORE_DATA and ERROR_FILE_NOT_FOUND; values a program sets read back."""

import base64
import struct

from emu_pe import Data, Word, ansi, calls, calls_by_name, data_area, utf16
from runtrace.trace.emulate import registry, regquery
from runtrace.trace.emulate.emulator import emulate

HKCU = 0x80000001
SHELL_FOLDERS = "Software\\Microsoft\\Windows\\CurrentVersion\\Explorer\\Shell Folders"
APPDATA = f"{registry.PROFILE}\\AppData\\Roaming"


def _u32(n: int) -> bytes:
    return struct.pack("<I", n)


def _open_shell_folders() -> tuple:
    return ("advapi32.dll!RegOpenKeyExA", [HKCU, Data(0x000), 0, 0x20019, Data(0x3F0)])


def test_a_wide_query_of_a_configured_string():
    data = data_area(
        (0x000, ansi(SHELL_FOLDERS)),
        (0x0A0, utf16("AppData")),
        (0x0C0, utf16("NoSuchValue")),
        (0x3C4, _u32(0x100)),  # the full query's buffer size
        (0x3CC, _u32(4)),  # the short buffer's
        (0x3D0, _u32(0x77)),  # the missing value's type and size, which must stay as they are
        (0x3D4, _u32(0x55)),
        (0x300, b"\xab" * 8),  # the short buffer, which must stay as it is
    )
    query = "advapi32.dll!RegQueryValueExW"
    value = Data(0x0A0)
    program = calls(
        [
            _open_shell_folders(),
            (query, [Word(0x3F0), value, 0, Data(0x3C0), Data(0x100), Data(0x3C4)]),
            ("kernel32.dll!lstrlenW", [Data(0x100)]),
            ("kernel32.dll!lstrlenA", [Word(0x3C0)]),  # the type
            ("kernel32.dll!lstrlenA", [Word(0x3C4)]),  # the size
            (query, [Word(0x3F0), value, 0, 0, 0, Data(0x3C8)]),  # the size only
            ("kernel32.dll!lstrlenA", [Word(0x3C8)]),
            (query, [Word(0x3F0), value, 0, 0, Data(0x300), Data(0x3CC)]),  # too small a buffer
            ("kernel32.dll!lstrlenA", [Word(0x3CC)]),
            ("kernel32.dll!lstrlenA", [Word(0x300)]),
            (query, [Word(0x3F0), Data(0x0C0), 0, Data(0x3D0), Data(0x340), Data(0x3D4)]),  # missing
            ("kernel32.dll!lstrlenA", [Word(0x3D0)]),
            ("kernel32.dll!lstrlenA", [Word(0x3D4)]),
            (query, [Word(0x3F0), value, 0, 0, Data(0x100), 0]),  # data without a size
            (query, [0x1234, value, 0, 0, Data(0x100), Data(0x3C4)]),  # no such key
        ],
        data,
    )
    trace = emulate(program, "x", "regquery-w")
    by_name = calls_by_name(trace)
    full, size_only, short, missing, no_size, no_key = by_name["advapi32.RegQueryValueExW"]
    needed = 2 * (len(APPDATA) + 1)
    assert [c.result for c in (full, size_only, short, missing, no_size, no_key)] == [0, 0, 234, 2, 87, 6]
    assert full.args[1] == "AppData" and full.args[3] == "REG_SZ"
    wide = by_name["kernel32.lstrlenW"][0]
    assert wide.args[0] == APPDATA and wide.result == len(APPDATA)
    numbers = [c.args[0] for c in by_name["kernel32.lstrlenA"]]
    assert numbers == [1, needed, needed, needed, 0xABABABAB, 0x77, 0x55]
    reads = [r for r in trace.meta.behaviour["registry"] if r["event"] == "read_value"]
    assert {"event": "read_value", "key": f"HKEY_CURRENT_USER\\{SHELL_FOLDERS}", "value": "AppData"} in reads


def test_an_ansi_query_gets_ansi_bytes():
    data = data_area((0x000, ansi(SHELL_FOLDERS)), (0x080, ansi("AppData")), (0x3C4, _u32(0x100)))
    program = calls(
        [
            _open_shell_folders(),
            (
                "advapi32.dll!RegQueryValueExA",
                [Word(0x3F0), Data(0x080), 0, Data(0x3C0), Data(0x100), Data(0x3C4)],
            ),
            ("kernel32.dll!lstrlenA", [Data(0x100)]),
            ("kernel32.dll!lstrlenA", [Word(0x100)]),  # the first four bytes
            ("kernel32.dll!lstrlenA", [Word(0x3C0)]),
            ("kernel32.dll!lstrlenA", [Word(0x3C4)]),
        ],
        data,
    )
    trace = emulate(program, "x", "regquery-a")
    by_name = calls_by_name(trace)
    assert by_name["advapi32.RegQueryValueExA"][0].result == 0
    text, first, kind, size = (c.args[0] for c in by_name["kernel32.lstrlenA"])
    assert text == APPDATA and first == int.from_bytes(APPDATA[:4].encode(), "little")
    assert kind == 1 and size == len(APPDATA) + 1


def test_values_a_program_sets_read_back():
    data = data_area(
        (0x000, ansi("Software\\Runtrace Test")),
        (0x040, ansi("Count")),
        (0x050, ansi("Name")),
        (0x060, ansi("Blob")),
        (0x070, utf16("Name")),
        (0x200, _u32(0x12345678)),
        (0x210, ansi("hello")),
        (0x220, b"\x00\xff\x80\x41"),
        (0x3C4, _u32(0x40)),
        (0x3CC, _u32(0x40)),
        (0x3D4, _u32(0x40)),
    )
    set_value, query = "advapi32.dll!RegSetValueExA", "advapi32.dll!RegQueryValueExA"
    key = Word(0x3F0)
    program = calls(
        [
            ("advapi32.dll!RegCreateKeyExA", [HKCU, Data(0x000), 0, 0, 0, 0xF003F, 0, Data(0x3F0), 0]),
            (set_value, [key, Data(0x040), 0, 4, Data(0x200), 4]),  # REG_DWORD
            (set_value, [key, Data(0x050), 0, 1, Data(0x210), 6]),  # REG_SZ
            (set_value, [key, Data(0x060), 0, 3, Data(0x220), 4]),  # REG_BINARY
            (query, [key, Data(0x040), 0, Data(0x3C0), Data(0x100), Data(0x3C4)]),
            ("kernel32.dll!lstrlenA", [Word(0x3C0)]),
            ("kernel32.dll!lstrlenA", [Word(0x100)]),
            ("kernel32.dll!lstrlenA", [Word(0x3C4)]),
            ("advapi32.dll!RegQueryValueExW", [key, Data(0x070), 0, Data(0x3C8), Data(0x140), Data(0x3CC)]),
            ("kernel32.dll!lstrlenW", [Data(0x140)]),
            ("kernel32.dll!lstrlenA", [Word(0x3C8)]),
            ("kernel32.dll!lstrlenA", [Word(0x3CC)]),
            (query, [key, Data(0x060), 0, Data(0x3D0), Data(0x180), Data(0x3D4)]),
            ("kernel32.dll!lstrlenA", [Word(0x3D0)]),
            ("kernel32.dll!lstrlenA", [Word(0x180)]),
            ("kernel32.dll!lstrlenA", [Word(0x3D4)]),
        ],
        data,
    )
    trace = emulate(program, "x", "regquery-set")
    by_name = calls_by_name(trace)
    assert [c.result for c in by_name["advapi32.RegSetValueExA"]] == [0, 0, 0]
    assert by_name["advapi32.RegQueryValueExA"][0].args[3] == "REG_DWORD"
    assert [c.result for c in by_name["advapi32.RegQueryValueExA"]] == [0, 0]
    assert by_name["advapi32.RegQueryValueExW"][0].result == 0
    assert by_name["kernel32.lstrlenW"][0].args[0] == "hello"
    numbers = [c.args[0] for c in by_name["kernel32.lstrlenA"]]
    assert numbers == [4, 0x12345678, 4, 1, 12, 3, 0x4180FF00, 4]


def test_stored_forms_to_windows_bytes():
    assert regquery.value_bytes("REG_SZ", "ab", True) == (1, b"a\0b\0\0\0")
    assert regquery.value_bytes("REG_EXPAND_SZ", "%TEMP%", False) == (2, b"%TEMP%\0")
    # REG_MULTI_SZ: a list of strings or one string with NUL separators (sysapi's stored form)
    assert regquery.value_bytes("REG_MULTI_SZ", ["a", "bc"], False) == (7, b"a\0bc\0\0")
    assert regquery.value_bytes(7, "a\0bc", True) == (7, "a\0bc\0\0".encode("utf-16-le"))
    assert regquery.value_bytes("REG_DWORD", "0x10", False) == (4, b"\x10\0\0\0")
    assert regquery.value_bytes("REG_QWORD", 1 << 40, True) == (11, (1 << 40).to_bytes(8, "little"))
    # REG_BINARY from the config: base64 text (Speakeasy's form), else the text's bytes
    assert regquery.value_bytes("REG_BINARY", base64.b64encode(b"\x01\xfe").decode(), False) == (
        3,
        b"\x01\xfe",
    )
    assert regquery.value_bytes("REG_BINARY", "not base64!", False) == (3, b"not base64!")
    assert regquery.type_number("reg_none") == 0 and regquery.type_number("REG_LINK") == 6


def test_an_unwritable_buffer_is_an_error_not_success():
    data = data_area((0x000, ansi(SHELL_FOLDERS)), (0x080, ansi("AppData")), (0x3C4, _u32(0x100)))
    program = calls(
        [
            _open_shell_folders(),
            ("advapi32.dll!RegQueryValueExA", [Word(0x3F0), Data(0x080), 0, 0, 0x10, Data(0x3C4)]),
        ],
        data,
    )
    trace = emulate(program, "x", "regquery-fault")
    assert calls_by_name(trace)["advapi32.RegQueryValueExA"][0].result == 998  # ERROR_NOACCESS
