"""`VerSetConditionMask` and `VerifyVersionInfo` (`versioninfo.py`): stdcall on x86 (the C runtime's
IsWindows...OrGreater returns with its stack as it was), masks built as Windows builds them, and the
answers compared with the version the emulated system reports."""

from __future__ import annotations

import struct

from emu_pe import Data, Word, calls, calls_by_name, data_area
from runtrace.trace.emulate import versioninfo as v
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

SYSTEM = {
    v.VER_MAJORVERSION: 6, v.VER_MINORVERSION: 1, v.VER_SERVICEPACKMAJOR: 0, v.VER_SERVICEPACKMINOR: 0,
    v.VER_BUILDNUMBER: 7601, v.VER_PLATFORMID: 2, v.VER_PRODUCT_TYPE: 1, v.VER_SUITENAME: 0x100,
}  # fmt: skip


def _mask(*pairs):
    mask = 0
    for type_bit, condition in pairs:
        mask = v.set_condition(mask, type_bit, condition)
    return mask


def test_condition_masks_put_three_bits_at_each_types_index():
    assert v.set_condition(0, v.VER_MAJORVERSION, v.VER_GREATER_EQUAL) == 3 << 3
    assert v.set_condition(0, v.VER_MINORVERSION | v.VER_SERVICEPACKMAJOR, 1) == 1 | (1 << 15)


def test_versions_compare_hierarchically():
    ge = v.VER_GREATER_EQUAL
    major_minor = v.VER_MAJORVERSION | v.VER_MINORVERSION
    mask = _mask((v.VER_MAJORVERSION, ge), (v.VER_MINORVERSION, ge))
    wanted = dict(SYSTEM)
    for (major, minor), answer in {
        (5, 2): True,
        (6, 0): True,
        (6, 1): True,
        (6, 2): False,
        (10, 0): False,
    }.items():
        wanted.update({v.VER_MAJORVERSION: major, v.VER_MINORVERSION: minor})
        assert v.verify(SYSTEM, wanted, major_minor, mask) is answer, (major, minor)
    # 5.9 >= 6.1 under the major's condition, though 9 > 1 on its own: the hierarchy decides.
    wanted.update({v.VER_MAJORVERSION: 5, v.VER_MINORVERSION: 9})
    assert (
        v.verify(
            SYSTEM, wanted, major_minor, _mask((v.VER_MAJORVERSION, v.VER_LESS), (v.VER_MINORVERSION, ge))
        )
        is False
    )
    assert v.verify(SYSTEM, wanted, 0, mask) is None  # no type: refused
    assert v.verify(SYSTEM, wanted, v.VER_BUILDNUMBER, mask) is None  # a type with no condition


def test_an_x86_program_checks_the_version_with_its_stack_intact():
    osvi = struct.pack("<IIIII", 284, 6, 0, 0, 0)  # OSVERSIONINFOEXW asking for 6.0
    osvi_10 = struct.pack("<IIIII", 284, 10, 0, 0, 0)
    data = data_area((0x000, osvi), (0x200, osvi_10), size=0x500)
    ge = v.VER_GREATER_EQUAL
    trace = emulate(
        calls(
            [
                ("kernel32.dll!VerSetConditionMask", [0, 0, v.VER_MAJORVERSION, ge], Data(0x400)),
                ("kernel32.dll!VerSetConditionMask", [Word(0x400), 0, v.VER_MINORVERSION, ge], Data(0x400)),
                ("kernel32.dll!VerifyVersionInfoW", [Data(0x000), 3, Word(0x400), 0]),
                ("kernel32.dll!VerifyVersionInfoW", [Data(0x200), 3, Word(0x400), 0]),
                ("kernel32.dll!GetLastError", []),
            ],
            data,
        ),
        "x",
        "version",
    )
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    by_name = calls_by_name(trace)
    assert [c.result for c in by_name["kernel32.VerSetConditionMask"]] == [3 << 3, (3 << 3) | 3]
    assert [c.result for c in by_name["kernel32.VerifyVersionInfoW"]] == [1, 0]  # 6.1 >= 6.0, not >= 10.0
    assert by_name["kernel32.GetLastError"][0].result == v.ERROR_OLD_WIN_VERSION
