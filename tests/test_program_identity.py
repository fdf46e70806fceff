"""Where the emulated program is and what the system DLLs it finds call themselves (tracer revision 20)."""

import pefile

from emu_pe import Data, calls
from runtrace.trace.emulate import decoys, startup
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason


def test_the_program_is_where_its_command_line_says():
    # A program that opens its own file from GetModuleFileName's answer, as droppers copying themselves do.
    trace = emulate(
        calls(
            [
                ("kernel32.dll!GetModuleFileNameA", [0, Data(0x100), 260]),
                ("kernel32.dll!lstrlenA", [Data(0x100)]),
                ("kernel32.dll!GetModuleFileNameW", [0, Data(0x200), 260]),
                ("kernel32.dll!lstrlenW", [Data(0x200)]),
                ("kernel32.dll!CreateFileA", [Data(0x100), 0x80000000, 1, 0, 3, 0x80, 0]),  # OPEN_EXISTING
                ("kernel32.dll!GetCommandLineA", []),
            ]
        ),  # fmt: skip
        "x",
        "identity",
    )
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    by_name = {c.name: c for c in trace.api_calls}
    assert by_name["kernel32.lstrlenA"].args[0] == startup.PROGRAM
    assert by_name["kernel32.lstrlenW"].args[0] == startup.PROGRAM
    assert by_name["kernel32.CreateFileA"].result not in (0, 0xFFFFFFFF)  # its own bytes are there
    assert startup.COMMAND_LINE.startswith(startup.PROGRAM)


def test_a_decoy_dll_names_its_file_in_its_export_directory():
    # Malware resolving APIs by walking the loaded modules' export directories compares their names
    # with "kernel32.dll"; Speakeasy's decoys said "kernel32".
    from speakeasy.windows.common import JitPeFile

    decoys.install()
    for module, expected in (("kernel32", b"kernel32.dll"), ("ntoskrnl", b"ntoskrnl.exe"), ("a.b", b"a.b")):
        image = JitPeFile("x86").get_decoy_pe_image(module, ["Sleep", "ExitProcess"])
        pe = pefile.PE(data=image)
        assert pe.DIRECTORY_ENTRY_EXPORT.name == expected
        assert [s.name for s in pe.DIRECTORY_ENTRY_EXPORT.symbols] == [b"Sleep", b"ExitProcess"]
