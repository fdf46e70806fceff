"""The emulated machine a program finds (tracer revision 22): system DLLs it loads by name, the registry
keys every Windows 10 machine has, a plain user and machine name, files written as programs check, and
dialogs' empty list boxes."""

import struct

from emu_pe import Data, Word, calls
from runtrace.trace.emulate import registry, systemdlls
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason


def _text(*strings: tuple[int, str]) -> bytes:
    out = bytearray(0x400)
    for offset, s in strings:
        out[offset : offset + len(s) + 1] = s.encode() + b"\0"
    return bytes(out)


def _calls_by_name(trace) -> dict[str, list]:
    out: dict[str, list] = {}
    for c in trace.api_calls:
        out.setdefault(c.name, []).append(c)
    return out


def test_system_dll_names():
    assert systemdlls.is_system_dll("VERSION.dll") and systemdlls.is_system_dll("mpr")
    assert systemdlls.is_system_dll("C:\\Windows\\System32\\uxtheme.dll")
    assert systemdlls.is_system_dll("riched20.dll")  # no import library, loaded by name
    assert not systemdlls.is_system_dll("C:\\Users\\user\\Desktop\\version.dll")  # a program's own copy
    assert not systemdlls.is_system_dll("nosuchthing.dll") and not systemdlls.is_system_dll("version.txt")
    assert not systemdlls.is_system_dll("mincore.dll")  # an umbrella import library, not a DLL


def test_a_system_dll_without_a_speakeasy_module_loads_and_resolves():
    data = _text((0, "VERSION.dll"), (0x40, "nosuchthing.dll"), (0xC0, "GetFileVersionInfoSizeA"))
    program = calls(
        [
            ("kernel32.dll!LoadLibraryA", [Data(0)], Data(0x3F0)),
            ("kernel32.dll!GetProcAddress", [Word(0x3F0), Data(0xC0)]),
            ("kernel32.dll!LoadLibraryA", [Data(0x40)]),
        ],
        data,
    )
    trace = emulate(program, "x", "loads")
    load, procedure = (
        _calls_by_name(trace)["kernel32.LoadLibraryA"],
        _calls_by_name(trace)["kernel32.GetProcAddress"],
    )
    assert load[0].result != 0 and procedure[0].args[0] == load[0].result and procedure[0].result != 0
    assert load[1].result == 0  # a DLL no Windows has still fails to load


def test_registry_keys_user_and_machine_names():
    data = _text(
        (0x000, "Software\\Microsoft\\Windows\\CurrentVersion\\Explorer\\Shell Folders"),
        (0x080, "AppData"),
        (0x0A0, "Software\\No Such Vendor"),
    )
    hkcu = 0x80000001
    program = calls(
        [
            ("advapi32.dll!RegOpenKeyExA", [hkcu, Data(0x000), 0, 0x20019, Data(0x3F0)]),
            ("advapi32.dll!RegQueryValueExA", [Word(0x3F0), Data(0x080), 0, 0, Data(0x100), Data(0x3F4)]),
            ("kernel32.dll!lstrlenA", [Data(0x100)]),
            ("advapi32.dll!RegOpenKeyExA", [hkcu, Data(0x0A0), 0, 0x20019, Data(0x3E0)]),
            ("advapi32.dll!GetUserNameA", [Data(0x200), Data(0x3E8)]),
            ("kernel32.dll!lstrlenA", [Data(0x200)]),
            ("kernel32.dll!GetComputerNameA", [Data(0x280), Data(0x3EC)]),
            ("kernel32.dll!lstrlenA", [Data(0x280)]),
        ],
        # buffer sizes: GetUserName's, GetComputerName's, (the key's handle), RegQueryValueEx's
        data[:0x3E8] + struct.pack("<4I", 0x40, 0x40, 0, 0x100),
    )
    trace = emulate(program, "x", "registry")
    by_name = _calls_by_name(trace)
    opened, missing = by_name["advapi32.RegOpenKeyExA"]
    assert opened.result == 0 and missing.result != 0
    assert by_name["advapi32.RegQueryValueExA"][0].result == 0
    texts = [c.args[0] for c in by_name["kernel32.lstrlenA"]]
    assert texts == [f"{registry.PROFILE}\\AppData\\Roaming", registry.USER, registry.HOST]


def test_written_files_count_their_bytes_and_keep_them():
    data = _text((0, "C:\\data\\out.bin"), (0x40, "0123456789abcdef"))
    program = calls(
        [
            (
                "kernel32.dll!CreateFileA",
                [Data(0), 0x40000000, 0, 0, 2, 0x80, 0],
                Data(0x3F0),
            ),  # CREATE_ALWAYS
            ("kernel32.dll!WriteFile", [Word(0x3F0), Data(0x40), 16, Data(0x3F4), 0]),
            ("kernel32.dll!WriteFile", [Word(0x3F0), Data(0x40), 10, Data(0x3F8), 0]),
            ("kernel32.dll!GetFileSize", [Word(0x3F0), 0]),
            ("kernel32.dll!lstrlenA", [Word(0x3F4)]),  # the counts written, read back as arguments
            ("kernel32.dll!lstrlenA", [Word(0x3F8)]),
        ],
        data,
    )
    trace = emulate(program, "x", "writes")
    by_name = _calls_by_name(trace)
    assert [c.result for c in by_name["kernel32.WriteFile"]] == [1, 1]
    assert by_name["kernel32.WriteFile"][0].args[1].endswith("(30313233343536373839616263646566)")
    assert by_name["kernel32.GetFileSize"][0].result == 26
    assert [c.args[0] for c in by_name["kernel32.lstrlenA"]] == [16, 10]
    writes = [f for f in trace.meta.behaviour["files"] if f["event"] == "write"]
    assert writes == [{"event": "write", "path": "C:\\data\\out.bin"}]


def test_a_dialogs_list_box_is_empty():
    program = calls(
        [
            ("user32.dll!SendDlgItemMessageA", [0x1000, 0x3FE, 0x188, 0, 0]),  # LB_GETCURSEL
            ("user32.dll!SendDlgItemMessageA", [0x1000, 0x3FE, 0x18B, 0, 0]),  # LB_GETCOUNT
            ("user32.dll!SendDlgItemMessageA", [0x1000, 0x3FE, 0x0C, 0, 0]),  # WM_SETTEXT
        ]
    )
    trace = emulate(program, "x", "listbox")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    assert [c.result for c in trace.api_calls] == [0xFFFFFFFF, 0, 0]
