"""The system API handlers of sysapi.py (tracer revision 16), in small emulated programs.

Each program makes a few calls (`emu_pe.calls`); what an API wrote to memory is passed on to `Sleep`,
whose recorded argument shows it.
"""

import struct

from emu_pe import DATA_RVA, DATA_SIZE, IMAGE_BASE, Data, Text, Word, calls
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.emulate.sysapi import KUSER_SHARED_DATA
from runtrace.trace.model import StopReason

SLEEP = "kernel32.dll!Sleep"
CURRENT_PROCESS = 0xFFFFFFFF
DATA = IMAGE_BASE["i386"] + DATA_RVA + DATA_SIZE // 2  # where `calls` programs' data area lies


def _run(steps, data=b"", **kwargs):
    trace = emulate(calls(steps, data, **kwargs), "x", "sysapi")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    return trace


def _sleeps(trace) -> list[int]:
    return [c.args[0] for c in trace.api_calls if c.name == "kernel32.Sleep"]


def test_psapi_lists_processes_and_the_programs_modules():
    trace = _run([
        ("kernel32.dll!K32EnumProcesses", [Data(0), 0x100, Data(0x200)]),
        (SLEEP, [Word(0x200)]),  # bytes written
        ("psapi.dll!EnumProcesses", [Data(0x100), 8, Data(0x204)]),  # room for two
        (SLEEP, [Word(0x204)]),
        ("psapi.dll!EnumProcessModules", [CURRENT_PROCESS, Data(0x300), 0x100, Data(0x208)]),
        (SLEEP, [Word(0x300)]),  # the first module: the program itself
        ("psapi.dll!GetModuleBaseNameA", [CURRENT_PROCESS, 0, Data(0x400), 0x100]),
        ("kernel32.dll!lstrlenA", [Data(0x400)]),
        ("psapi.dll!GetModuleFileNameExW", [CURRENT_PROCESS, 0x400000, Data(0x500), 4]),  # cut to fit
        ("kernel32.dll!lstrlenW", [Data(0x500)]),
        ("psapi.dll!GetProcessImageFileNameA", [CURRENT_PROCESS, Data(0x600), 0x100]),
        ("kernel32.dll!lstrlenA", [Data(0x600)]),
    ])  # fmt: skip
    listed, two, first_module = _sleeps(trace)
    assert listed >= 8 and listed % 4 == 0  # a byte size, several processes
    assert two == 8
    assert first_module == 0x400000
    by_name = {c.name: c for c in trace.api_calls}
    name = by_name["psapi.GetModuleBaseNameA"]
    assert name.result == len(name.args[2].rsplit("\\", 1)[1]) and name.args[2].endswith(".exe")
    lengths = [c for c in trace.api_calls if c.name.startswith("kernel32.lstrlen")]
    assert lengths[0].result == name.result and lengths[0].args[0] == name.args[2].rsplit("\\", 1)[1]
    assert lengths[1].result == 3  # three characters and the terminator in a buffer of 4
    assert lengths[2].args[0].startswith("\\Device\\HarddiskVolume2\\")


def test_move_file_copies_an_existing_file_and_fails_on_a_missing_one():
    data = b"C:\\Users\\user\\notes.txt\0".ljust(0x40, b"\0") + b"C:\\Temp\\moved.txt\0".ljust(0x40, b"\0")
    data += b"C:\\nowhere\\missing.bin\0"
    trace = _run([
        ("kernel32.dll!MoveFileExA", [Data(0), Data(0x40), 1]),
        ("kernel32.dll!MoveFileA", [Data(0x80), Data(0x40)]),
        ("kernel32.dll!GetLastError", []),
    ], data)  # fmt: skip
    move_ex, move, last_error = trace.api_calls
    assert move_ex.args[:2] == ("C:\\Users\\user\\notes.txt", "C:\\Temp\\moved.txt") and move_ex.result == 1
    assert move.result == 0 and last_error.result == 2  # ERROR_FILE_NOT_FOUND


def test_move_file_takes_the_contents_under_any_spelling_and_removes_the_old_name():
    names = ["C:\\Users\\user\\notes.txt", "C:\\Temp\\\\a.dat", "c:\\temp\\A.DAT", "C:\\Temp\\b.dat"]
    data = b"".join(n.encode() + b"\0".ljust(0x40 - len(n), b"\0") for n in names)
    open_read = [0x80000000, 1, 0, 3, 0, 0]  # GENERIC_READ, FILE_SHARE_READ, OPEN_EXISTING
    trace = _run([
        ("kernel32.dll!CopyFileA", [Data(0x00), Data(0x40), 0]),
        ("kernel32.dll!MoveFileA", [Data(0x80), Data(0xC0)]),  # a.dat, spelled another way
        ("kernel32.dll!MoveFileA", [Data(0x40), Data(0x80)]),  # gone from its old name (.txt and .exe
        # names would not be: Speakeasy's configuration serves a stand-in for any of them)
        ("kernel32.dll!CreateFileA", [Data(0x00), *open_read], Data(0x200)),
        ("kernel32.dll!GetFileSize", [Word(0x200), 0]),
        ("kernel32.dll!CreateFileA", [Data(0xC0), *open_read], Data(0x204)),
        ("kernel32.dll!GetFileSize", [Word(0x204), 0]),
    ], data)  # fmt: skip
    copy, move, again = trace.api_calls[:3]
    assert (copy.result, move.result, again.result) == (1, 1, 0)
    original, moved = [c.result for c in trace.api_calls if c.name == "kernel32.GetFileSize"]
    assert moved == original > 0


def test_registry_keys_are_created_then_opened_and_values_set():
    data = b"Software\\runtrace\0".ljust(0x20, b"\0") + b"Run\0".ljust(0x10, b"\0") + b"payload\0"
    create = (
        "advapi32.dll!RegCreateKeyExA",
        [0x80000001, Data(0), 0, 0, 0, 0xF003F, 0, Data(0x200), Data(0x204)],
    )
    trace = _run([
        create,
        (SLEEP, [Word(0x204)]),  # the disposition
        create,
        (SLEEP, [Word(0x204)]),
        ("advapi32.dll!RegSetValueExA", [Word(0x200), Data(0x20), 0, 1, Data(0x30), 8]),
    ], data)  # fmt: skip
    first = trace.api_calls[0]
    assert first.args[1] == "HKEY_CURRENT_USER\\Software\\runtrace" and first.result == 0
    assert _sleeps(trace) == [1, 2]  # REG_CREATED_NEW_KEY, then REG_OPENED_EXISTING_KEY
    set_value = next(c for c in trace.api_calls if c.name == "advapi32.RegSetValueExA")
    assert set_value.args[0] != 0  # the handle RegCreateKeyEx wrote
    assert set_value.args[1] == "Run" and set_value.args[4] == "payload" and set_value.result == 0


def test_init_once_calls_the_function_once_with_its_parameter():
    # BOOL CALLBACK init(PINIT_ONCE, PVOID parameter, PVOID *context): Sleep(parameter), return TRUE.
    def init(lay):
        return (
            b"\xff\x74\x24\x08"  # push dword ptr [esp + 8]
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "Sleep"))  # call [Sleep]
            + b"\xb8\x01\x00\x00\x00"  # mov eax, 1
            + b"\xc2\x0c\x00"  # ret 12
        )  # fmt: skip

    once = ("kernel32.dll!InitOnceExecuteOnce", [Data(0), Text(0x800), 0x1234, Data(0x10)])
    trace = _run(
        [once, once, ("kernel32.dll!GetCurrentProcessId", [])], code_at={0x800: init}, extra_imports=(SLEEP,)
    )
    assert [c.name for c in trace.api_calls] == [
        "kernel32.InitOnceExecuteOnce", "kernel32.Sleep", "kernel32.InitOnceExecuteOnce",
        "kernel32.GetCurrentProcessId",
    ]  # fmt: skip
    assert _sleeps(trace) == [0x1234]


def test_init_once_in_two_steps_hands_on_the_context():
    begin = ("kernel32.dll!InitOnceBeginInitialize", [Data(0), 0, Data(0x10), Data(0x14)])
    trace = _run([
        begin,
        (SLEEP, [Word(0x10)]),  # pending: this caller initialises
        ("kernel32.dll!InitOnceComplete", [Data(0), 0, 0x5678]),
        begin,
        (SLEEP, [Word(0x10)]),  # done
        (SLEEP, [Word(0x14)]),  # with the context it completed with
    ])  # fmt: skip
    assert _sleeps(trace) == [1, 0, 0x5678]


def test_a_fiber_runs_with_its_parameter_and_switches_back():
    # VOID CALLBACK routine(PVOID parameter): Sleep(parameter), then SwitchToFiber(the main fiber).
    def routine(lay):
        return (
            b"\xff\x74\x24\x04"  # push dword ptr [esp + 4]
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "Sleep"))  # call [Sleep]
            + b"\xff\x35" + struct.pack("<I", lay.data + 0x200)  # push dword ptr [main fiber]
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "SwitchToFiber"))  # call
            + b"\xcc"  # int3: never comes back here
        )  # fmt: skip

    trace = _run(
        [
            ("kernel32.dll!ConvertThreadToFiber", [0], Data(0x200)),
            ("kernel32.dll!CreateFiber", [0, Text(0x800), 0x77], Data(0x204)),
            ("kernel32.dll!SwitchToFiber", [Word(0x204)]),
            ("kernel32.dll!GetCurrentProcessId", []),
        ],
        code_at={0x800: routine},
        extra_imports=(SLEEP,),
    )
    assert [c.name.split(".")[1] for c in trace.api_calls] == [
        "ConvertThreadToFiber", "CreateFiber", "SwitchToFiber", "Sleep", "SwitchToFiber",
        "GetCurrentProcessId",
    ]  # fmt: skip
    assert _sleeps(trace) == [0x77]


def test_loader_language_cursor_and_file_size_answers():
    name = "kernel32.dll".encode("utf-16-le")
    missing = "nosuch.dll".encode("utf-16-le")
    data = bytearray(0x200)
    data[0x40 : 0x40 + len(name)] = name
    data[0x80 : 0x80 + len(missing)] = missing
    for at, text, size in ((0x100, 0x40, len(name)), (0x108, 0x80, len(missing))):  # UNICODE_STRINGs
        struct.pack_into("<HHI", data, at, size, size, DATA + text)
    trace = _run([
        ("ntdll.dll!LdrGetDllHandleEx", [0, 0, 0, Data(0x100), Data(0x120)]),
        ("ntdll.dll!LdrGetDllHandleEx", [0, 0, 0, Data(0x108), Data(0x124)]),
        (SLEEP, [Word(0x120)]),
        ("user32.dll!GetCursorPos", [Data(0x130)]),
        (SLEEP, [Word(0x130)]),
        ("user32.dll!GetCursorPos", [Data(0x130)]),
        (SLEEP, [Word(0x130)]),
        ("kernel32.dll!GetUserPreferredUILanguages", [8, Data(0x140), 0, Data(0x144)]),
        (SLEEP, [Word(0x140)]),
        ("kernel32.dll!SetEndOfFile", [0x1234]),
    ], bytes(data))  # fmt: skip
    found, not_found = (c for c in trace.api_calls if c.name == "ntdll.LdrGetDllHandleEx")
    assert found.result == 0 and found.args[3] == "kernel32.dll"
    assert not_found.result == 0xC0000135
    kernel32, x1, x2, languages = _sleeps(trace)
    assert kernel32 > 0x10000
    assert x1 != x2  # the pointer moves, as a user's does
    assert languages == 1
    assert trace.api_calls[-1].result == 1


def test_kuser_shared_data_reads_as_windows_10():
    trace = _run([
        (SLEEP, [Word(KUSER_SHARED_DATA + 0x26C - DATA)]),  # NtMajorVersion
        (SLEEP, [Word(KUSER_SHARED_DATA + 0x260 - DATA)]),  # NtBuildNumber
        (SLEEP, [Word(KUSER_SHARED_DATA + 0x2D4 - DATA)]),  # KdDebuggerEnabled (and its neighbours)
    ])  # fmt: skip
    assert _sleeps(trace) == [10, 19045, 0]


def test_stdcall_apis_that_were_stubbed_pop_their_arguments():
    # The program's stack survives each call only if the handler pops exactly its arguments: the final
    # `ret` of the program goes back to the emulator only with the stack as it started.
    data = "C:\\Users\\user\\notes.txt\0".encode("utf-16-le").ljust(0x80, b"\0")
    data += "C:\\Temp\\copy.txt\0".encode("utf-16-le").ljust(0x40, b"\0")
    data += "C:\\nowhere\\missing.bin\0".encode("utf-16-le")
    trace = _run([
        ("advapi32.dll!EventRegister", [Data(0x200), 0, 0, Data(0x208)]),
        ("advapi32.dll!EventWrite", [Word(0x208), Word(0x20C), Data(0x210), 0, 0]),  # REGHANDLE: 2 slots
        ("advapi32.dll!EventEnabled", [Word(0x208), Word(0x20C), Data(0x210)]),
        ("advapi32.dll!EventProviderEnabled", [Word(0x208), Word(0x20C), 4, 0, 0]),
        ("advapi32.dll!EventUnregister", [Word(0x208), Word(0x20C)]),
        ("kernel32.dll!CopyFile2", [Data(0), Data(0x80), 0]),
        ("kernel32.dll!CopyFile2", [Data(0xC0), Data(0x80), 0]),
        ("fltlib.dll!FilterUnload", [Data(0)]),
        ("gdi32.dll!CreateDCW", [Data(0), 0, 0, 0]),
        (SLEEP, [Word(0x208)]),  # the event handle's low half
    ], data)  # fmt: skip
    results = {c.name.split(".")[1]: c.result for c in trace.api_calls}
    assert results["EventRegister"] == 0 and _sleeps(trace)[0] != 0
    copies = [c for c in trace.api_calls if c.name == "kernel32.CopyFile2"]
    assert (
        copies[0].args[:2] == ("C:\\Users\\user\\notes.txt", "C:\\Temp\\copy.txt") and copies[0].result == 0
    )
    assert copies[1].result == 0x80070002
    assert results["FilterUnload"] == 0 and results["CreateDCW"] != 0


def test_image_directories_are_found_from_the_headers_in_memory():
    import pefile

    steps = [
        ("ntdll.dll!RtlImageDirectoryEntryToData", [0x400000, 1, 1, Data(0x200)]),  # the import directory
        (SLEEP, [Word(0x200)]),
        ("ntdll.dll!RtlImageDirectoryEntryToData", [0x400000, 0, 1, Data(0x204)]),  # as a file: an offset
        ("ntdll.dll!RtlImageDirectoryEntryToData", [0x400000, 1, 5, Data(0x204)]),  # no relocations
        ("ntdll.dll!RtlImageNtHeader", [0x400000]),
        ("ntdll.dll!RtlImageNtHeader", [0x400000 + 0x1000]),  # not an image's start
        ("kernel32.dll!GetModuleHandleA", [Data(0)], Data(0x208)),
        ("kernel32.dll!GetProcAddress", [Word(0x208), Data(0x10)]),
        ("ntdll.dll!RtlImageDirectoryEntryToData", [Word(0x208), 1, 0, Data(0x20C)]),  # ntdll's exports
    ]
    data = calls(steps, b"ntdll.dll\0".ljust(0x10, b"\0") + b"NtClose\0")
    pe = pefile.PE(data=data)
    imports = pe.OPTIONAL_HEADER.DATA_DIRECTORY[1]
    trace = emulate(data, "x", "sysapi")
    assert trace.meta.stop_reason is StopReason.EXITED
    results = [c.result for c in trace.api_calls if c.name.startswith("ntdll.")]
    as_image, as_file, relocations, nt, not_nt, ntdll_exports = results
    assert as_image == 0x400000 + imports.VirtualAddress
    assert as_file == 0x400000 + pe.get_offset_from_rva(imports.VirtualAddress)
    assert relocations == 0 and nt == 0x400000 + pe.DOS_HEADER.e_lfanew and not_nt == 0
    assert _sleeps(trace) == [imports.Size]
    # A system DLL's image (Speakeasy's decoy, mapped when first read): its export directory is found
    # inside it, below the export the program looked up.
    ntdll, nt_close = (c.result for c in trace.api_calls if c.name.startswith("kernel32.Get"))
    assert ntdll < ntdll_exports < nt_close


def test_a_finite_wait_on_the_own_process_times_out():
    trace = _run([
        ("kernel32.dll!GetCurrentProcessId", [], Data(0)),
        ("kernel32.dll!OpenProcess", [0x100000, 0, Word(0)], Data(4)),
        ("kernel32.dll!WaitForSingleObject", [Word(4), 0x40]),
        ("kernel32.dll!WaitForSingleObject", [CURRENT_PROCESS, 100]),
        ("kernel32.dll!WaitForSingleObjectEx", [CURRENT_PROCESS, 100, 0]),
        ("kernel32.dll!WaitForSingleObject", [Word(4), 0xFFFFFFFF]),  # INFINITE: as if it had ended
        ("kernel32.dll!CreateEventA", [0, 1, 0, 0], Data(8)),
        ("kernel32.dll!WaitForSingleObject", [Word(8), 100]),  # anything else: signalled
    ])  # fmt: skip
    waits = [c.result for c in trace.api_calls if c.name.startswith("kernel32.WaitForSingleObject")]
    assert trace.api_calls[1].result  # a handle to the own process
    assert waits == [0x102, 0x102, 0x102, 0, 0]


def test_missing_profile_keys_give_the_defaults_with_the_arguments_popped():
    data = (
        b"Settings\0".ljust(0x10, b"\0")
        + b"NumFields\0".ljust(0x10, b"\0")
        + b"  fallback \0".ljust(0x20, b"\0")
    )
    data += b"C:\\Users\\user\\setup.ini\0"
    section, key, default, ini = Data(0), Data(0x10), Data(0x20), Data(0x40)
    trace = _run([
        ("kernel32.dll!GetPrivateProfileIntA", [section, key, 7, ini]),
        ("kernel32.dll!GetPrivateProfileStringA", [section, key, default, Data(0x100), 0x40, ini]),
        ("kernel32.dll!GetPrivateProfileStringA", [section, key, default, Data(0x180), 4, ini]),
        ("kernel32.dll!lstrlenA", [Data(0x100)]),
    ], data)  # fmt: skip
    results = [c.result for c in trace.api_calls]
    assert results == [7, 8, 3, 8]  # the default, "fallback" without its blanks, cut to 3 + NUL
    assert trace.api_calls[-1].args[0] == "fallback"
