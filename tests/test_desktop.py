"""The machine's display (`desktop.py`): a 1920x1080 screen at 96 DPI, answered through the APIs a
program measures it with, as a program inside the emulator sees them."""

from __future__ import annotations

import struct

from emu_pe import Data, Word, calls, calls_by_name, data_area
from runtrace.trace.emulate import desktop
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

SM_CXSCREEN, SM_CYSCREEN, SM_CLEANBOOT, SM_REMOTESESSION = 0, 1, 67, 0x1000
LOGPIXELSX, HORZRES = 88, 8
SPI_GETWORKAREA, SPI_GETNONCLIENTMETRICS, SPI_GETWHEELSCROLLLINES = 0x30, 0x29, 0x68


def _run(steps, data):
    trace = emulate(calls(steps, data), "x", "display")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    return calls_by_name(trace)


def test_the_screen_is_full_hd_and_the_machine_a_normal_one():
    by_name = _run(
        [
            ("user32.dll!GetSystemMetrics", [SM_CXSCREEN]),
            ("user32.dll!GetSystemMetrics", [SM_CYSCREEN]),
            ("user32.dll!GetSystemMetrics", [SM_CLEANBOOT]),  # not safe mode
            ("user32.dll!GetSystemMetrics", [SM_REMOTESESSION]),
            ("user32.dll!GetDC", [0], Data(0x000)),
            ("gdi32.dll!GetDeviceCaps", [Word(0x000), LOGPIXELSX]),
            ("gdi32.dll!GetDeviceCaps", [Word(0x000), HORZRES]),
        ],
        data_area(),
    )
    assert [c.result for c in by_name["user32.GetSystemMetrics"]] == [1920, 1080, 0, 0]
    assert [c.result for c in by_name["gdi32.GetDeviceCaps"]] == [96, 1920]


def test_system_parameters_and_the_monitor_answer_with_the_work_area():
    mi_size = 40 + 64  # MONITORINFOEXW
    ncm_size = 504  # NONCLIENTMETRICSW with iPaddedBorderWidth
    data = data_area((0x100, struct.pack("<I", mi_size)), (0x200, struct.pack("<I", ncm_size)), size=0x400)
    by_name = _run(
        [
            ("user32.dll!SystemParametersInfoA", [SPI_GETWORKAREA, 0, Data(0x000), 0]),
            ("kernel32.dll!Sleep", [Word(0x00C)]),  # the work area's bottom
            ("user32.dll!SystemParametersInfoW", [SPI_GETWHEELSCROLLLINES, 0, Data(0x010), 0]),
            ("kernel32.dll!Sleep", [Word(0x010)]),
            ("user32.dll!SystemParametersInfoW", [SPI_GETNONCLIENTMETRICS, ncm_size, Data(0x200), 0]),
            ("kernel32.dll!Sleep", [Word(0x208)]),  # iScrollWidth
            ("kernel32.dll!lstrlenW", [Data(0x200 + 24 + 28)]),  # lfCaptionFont's face name
            ("user32.dll!MonitorFromWindow", [0, 2], Data(0x020)),
            ("user32.dll!GetMonitorInfoW", [Word(0x020), Data(0x100)]),
            ("kernel32.dll!Sleep", [Word(0x100 + 12)]),  # rcMonitor.right
            ("kernel32.dll!lstrlenW", [Data(0x100 + 40)]),  # the device name
        ],
        data,
    )
    assert [c.result for c in by_name["user32.SystemParametersInfoA"]] == [1]
    assert [c.result for c in by_name["user32.SystemParametersInfoW"]] == [1, 1]
    assert [c.args[0] for c in by_name["kernel32.Sleep"]] == [1040, 3, 17, 1920]
    assert [c.args[0] for c in by_name["kernel32.lstrlenW"]] == ["Segoe UI", "\\\\.\\DISPLAY1"]
    assert by_name["user32.MonitorFromWindow"][0].result == desktop.MONITOR


def test_non_client_metrics_fit_the_size_the_caller_gives():
    for wide, full in ((False, 344), (True, 504)):
        assert len(desktop.non_client_metrics(wide, full)) == full
        assert len(desktop.non_client_metrics(wide, full - 4)) == full - 4  # before Vista's padded border
