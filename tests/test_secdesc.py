"""`ConvertStringSecurityDescriptorToSecurityDescriptorA/W` (`secdesc.py`): a self-relative descriptor the
program can pass on (its size read back), the SDDL text kept in the trace, a wrong revision refused."""

from __future__ import annotations

from emu_pe import Data, Word, ansi, calls, calls_by_name, data_area, utf16
from runtrace.trace.emulate import secdesc
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason


def test_a_program_builds_security_attributes_from_sddl():
    data = data_area((0x000, ansi("D:(A;;GA;;;WD)")), (0x040, utf16("D:(A;;GA;;;WD)")))
    trace = emulate(
        calls(
            [
                (
                    "advapi32.dll!ConvertStringSecurityDescriptorToSecurityDescriptorA",
                    [Data(0x000), 1, Data(0x100), Data(0x104)],
                ),
                ("kernel32.dll!Sleep", [Word(0x104)]),  # the size it wrote
                (
                    "advapi32.dll!ConvertStringSecurityDescriptorToSecurityDescriptorW",
                    [Data(0x040), 2, Data(0x108), 0],
                ),  # no such revision
                ("kernel32.dll!GetLastError", []),
                ("kernel32.dll!LocalFree", [Word(0x100)]),
            ],  # fmt: skip
            data,
        ),
        "x",
        "sddl",
    )
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    by_name = calls_by_name(trace)
    first = by_name["advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorA"][0]
    assert first.result == 1 and first.args[0] == "D:(A;;GA;;;WD)"
    assert by_name["kernel32.Sleep"][0].args[0] == len(secdesc.SELF_RELATIVE_NULL_DACL)
    assert by_name["advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW"][0].result == 0
    assert by_name["kernel32.GetLastError"][0].result == secdesc.ERROR_UNKNOWN_REVISION
