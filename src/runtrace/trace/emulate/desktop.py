"""The machine's display: one 1920x1080 monitor at 96 DPI (100 % scaling), 32 bits per pixel, the task
bar 40 pixels high at the bottom, as a Windows 10 desktop reports it (tracer revision 24).

Speakeasy answers `GetSystemMetrics` with 1 for every index, so the emulated screen was one pixel wide
and the machine said it was booted in safe mode (`SM_CLEANBOOT`), a remote session, shutting down, with
the mouse buttons swapped and a debug build of user32 (`SM_DEBUG`); `GetDeviceCaps` answered 16 for
every capability (16 pixels wide, 16 DPI).  Malware that measures the screen before it goes on (a
sandbox's small screen is a common tell) gave up, and GUI programs laid out windows for a 1x1 screen.
`SystemParametersInfo` had no handler: the stub's FALSE with nothing written was met by 14 malware runs
that ended with fewer than 1,000 API calls at revision 23 (the work area, non-client metrics and fonts
GUI frameworks read first); `MonitorFromWindow` had none either (Delphi's forms position themselves
on their monitor), and `GetMonitorInfo` left the rectangles zero.
"""

from __future__ import annotations

from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate.apigroup import ApiGroup

STDCALL = se_arch.CALL_CONV_STDCALL
WIDTH, HEIGHT, DPI, BITS_PER_PIXEL = 1920, 1080, 96, 32
TASKBAR = 40
WORK_AREA = (0, 0, WIDTH, HEIGHT - TASKBAR)
MONITOR = 0x00010001  # the one monitor's HMONITOR
MONITORINFOF_PRIMARY = 1
MONITOR_DEVICE = "\\\\.\\DISPLAY1"
FONT_FACE = "Segoe UI"
FONT_HEIGHT = -12  # 9 points at 96 DPI
FW_NORMAL = 400
DEFAULT_CHARSET = 1

# GetSystemMetrics(index) -> value; an index not listed answers 0, as Windows answers an unknown one.
SYSTEM_METRICS = {
    0: WIDTH, 1: HEIGHT,  # SM_CXSCREEN, SM_CYSCREEN
    2: 17, 3: 17, 4: 23, 5: 1, 6: 1, 7: 3, 8: 3, 9: 17, 10: 17,  # scroll bars, caption, borders
    11: 32, 12: 32, 13: 32, 14: 32, 15: 20,  # icon, cursor, menu
    16: WIDTH, 17: HEIGHT - TASKBAR - 23,  # SM_CXFULLSCREEN, SM_CYFULLSCREEN: the work area less a caption
    19: 1, 20: 17, 21: 17,  # SM_MOUSEPRESENT, SM_CYVSCROLL, SM_CXHSCROLL
    28: 136, 29: 39, 30: 36, 31: 22, 32: 4, 33: 4, 34: 136, 35: 39, 36: 4, 37: 4, 38: 75, 39: 75,
    43: 3,  # SM_CMOUSEBUTTONS
    45: 2, 46: 2, 47: 160, 48: 28, 49: 16, 50: 16, 51: 23, 52: 22, 53: 22, 54: 19, 55: 19, 56: 8,
    57: 160, 58: 28, 59: WIDTH + 20, 60: HEIGHT + 20, 61: WIDTH + 16, 62: HEIGHT - TASKBAR + 16,
    63: 3,  # SM_NETWORK: present
    68: 4, 69: 4, 71: 15, 72: 15, 75: 1,  # drag, menu check, SM_MOUSEWHEELPRESENT
    76: 0, 77: 0, 78: WIDTH, 79: HEIGHT, 80: 1, 81: 1,  # the virtual screen: one monitor
    83: 1, 84: 1, 91: 1, 92: 4,  # focus border, horizontal wheel, SM_CXPADDEDBORDER
    0x2003: 1,  # SM_CONVERTIBLESLATEMODE: not a slate
}  # fmt: skip

# GetDeviceCaps(hdc, index) -> value for the screen; an index not listed answers 0.
DEVICE_CAPS = {
    0: 0x4000,  # DRIVERVERSION
    2: 1,  # TECHNOLOGY: DT_RASDISPLAY
    4: 508, 6: 286,  # HORZSIZE, VERTSIZE (mm)
    8: WIDTH, 10: HEIGHT, 12: BITS_PER_PIXEL, 14: 1,  # HORZRES, VERTRES, BITSPIXEL, PLANES
    24: -1,  # NUMCOLORS: more than 8 bits per pixel
    38: 0x7E99,  # RASTERCAPS: bitmaps, DIBs, stretching, no palette
    40: 36, 42: 36, 44: 51,  # ASPECTX, ASPECTY, ASPECTXY
    88: DPI, 90: DPI,  # LOGPIXELSX, LOGPIXELSY
    116: 60, 117: HEIGHT, 118: WIDTH,  # VREFRESH, DESKTOPVERTRES, DESKTOPHORZRES
}  # fmt: skip

# SystemParametersInfo actions this answers by writing a value (others succeed, writing nothing).
SPI_GETBEEP, SPI_GETMOUSE, SPI_GETBORDER, SPI_GETKEYBOARDSPEED = 0x01, 0x03, 0x05, 0x0A
SPI_ICONHORIZONTALSPACING, SPI_GETSCREENSAVETIMEOUT, SPI_GETSCREENSAVEACTIVE = 0x0D, 0x0E, 0x10
SPI_GETKEYBOARDDELAY, SPI_ICONVERTICALSPACING, SPI_GETICONTITLEWRAP = 0x16, 0x18, 0x19
SPI_GETMENUDROPALIGNMENT, SPI_GETICONTITLELOGFONT, SPI_GETDRAGFULLWINDOWS = 0x1B, 0x1F, 0x26
SPI_GETNONCLIENTMETRICS, SPI_GETMINIMIZEDMETRICS, SPI_GETICONMETRICS = 0x29, 0x2B, 0x2D
SPI_GETWORKAREA, SPI_GETHIGHCONTRAST, SPI_GETANIMATION, SPI_GETFONTSMOOTHING = 0x30, 0x42, 0x48, 0x4A
SPI_GETSCREENREADER, SPI_GETMENUSHOWDELAY, SPI_GETWHEELSCROLLLINES = 0x46, 0x6A, 0x68
SPI_GETSCREENSAVERRUNNING, SPI_GETDESKWALLPAPER = 0x72, 0x73
SPI_GETMOUSEHOVERWIDTH, SPI_GETMOUSEHOVERHEIGHT, SPI_GETMOUSEHOVERTIME = 0x62, 0x64, 0x66
SPI_GETWHEELSCROLLCHARS = 0x6C
SPI_GETMENUANIMATION, SPI_GETCOMBOBOXANIMATION, SPI_GETLISTBOXSMOOTHSCROLLING = 0x1002, 0x1004, 0x1006
SPI_GETGRADIENTCAPTIONS, SPI_GETKEYBOARDCUES, SPI_GETHOTTRACKING = 0x1008, 0x100A, 0x100E
SPI_GETMENUFADE, SPI_GETSELECTIONFADE, SPI_GETTOOLTIPANIMATION = 0x1012, 0x1014, 0x1016
SPI_GETTOOLTIPFADE, SPI_GETCURSORSHADOW, SPI_GETFLATMENU, SPI_GETDROPSHADOW = 0x1018, 0x101A, 0x1022, 0x1024
SPI_GETUIEFFECTS, SPI_GETCLIENTAREAANIMATION, SPI_GETFOCUSBORDERWIDTH = 0x103E, 0x1042, 0x200E
SPI_GETFOCUSBORDERHEIGHT, SPI_GETFONTSMOOTHINGTYPE, SPI_GETCARETWIDTH = 0x2010, 0x200A, 0x2006

# Actions whose pvParam is a UINT or BOOL (4 bytes) the answer is written to.
_INT_ANSWERS = {
    SPI_GETBEEP: 1, SPI_GETBORDER: 1, SPI_GETKEYBOARDSPEED: 31, SPI_ICONHORIZONTALSPACING: 75,
    SPI_GETSCREENSAVETIMEOUT: 600, SPI_GETSCREENSAVEACTIVE: 0, SPI_GETKEYBOARDDELAY: 1,
    SPI_ICONVERTICALSPACING: 75, SPI_GETICONTITLEWRAP: 1, SPI_GETMENUDROPALIGNMENT: 0,
    SPI_GETDRAGFULLWINDOWS: 1, SPI_GETFONTSMOOTHING: 1, SPI_GETSCREENREADER: 0, SPI_GETMENUSHOWDELAY: 400,
    SPI_GETWHEELSCROLLLINES: 3, SPI_GETSCREENSAVERRUNNING: 0, SPI_GETMOUSEHOVERWIDTH: 4,
    SPI_GETMOUSEHOVERHEIGHT: 4, SPI_GETMOUSEHOVERTIME: 400, SPI_GETWHEELSCROLLCHARS: 3,
    SPI_GETMENUANIMATION: 1, SPI_GETCOMBOBOXANIMATION: 1, SPI_GETLISTBOXSMOOTHSCROLLING: 1,
    SPI_GETGRADIENTCAPTIONS: 1, SPI_GETKEYBOARDCUES: 0, SPI_GETHOTTRACKING: 1, SPI_GETMENUFADE: 1,
    SPI_GETSELECTIONFADE: 0, SPI_GETTOOLTIPANIMATION: 1, SPI_GETTOOLTIPFADE: 1, SPI_GETCURSORSHADOW: 1,
    SPI_GETFLATMENU: 1, SPI_GETDROPSHADOW: 1, SPI_GETUIEFFECTS: 1, SPI_GETCLIENTAREAANIMATION: 1,
    SPI_GETFOCUSBORDERWIDTH: 1, SPI_GETFOCUSBORDERHEIGHT: 1, SPI_GETFONTSMOOTHINGTYPE: 2,
    SPI_GETCARETWIDTH: 1,
}  # fmt: skip


def _i32(*values: int) -> bytes:
    return b"".join((v & 0xFFFFFFFF).to_bytes(4, "little") for v in values)


def logfont(wide: bool, height: int = FONT_HEIGHT, weight: int = FW_NORMAL) -> bytes:
    """A LOGFONTA/W of the desktop's UI font (60 or 92 bytes)."""
    face = FONT_FACE.encode("utf-16-le" if wide else "latin-1")
    face = face.ljust(64 if wide else 32, b"\0")
    return _i32(height, 0, 0, 0, weight) + bytes([0, 0, 0, DEFAULT_CHARSET, 0, 0, 0, 0]) + face


def non_client_metrics(wide: bool, size: int) -> bytes:
    """NONCLIENTMETRICSA/W of `size` bytes (the caller's cbSize: with or without Vista's
    iPaddedBorderWidth)."""
    font = logfont(wide)
    data = _i32(size, 1, 17, 17, 36, 23) + font + _i32(22, 23) + font + _i32(19, 19) + font * 3
    data += _i32(4)  # iPaddedBorderWidth
    return data[:size]


def rect(left: int, top: int, right: int, bottom: int) -> bytes:
    return _i32(left, top, right, bottom)


class Desktop(ApiGroup):
    def overriding(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers that replace Speakeasy's (its answers are described in the module's docstring)."""
        return [
            (("user32",), "GetSystemMetrics", 1, STDCALL, lambda a: SYSTEM_METRICS.get(a[0] & 0xFFFFFFFF, 0)),
            (
                ("user32",),
                "GetSystemMetricsForDpi",
                2,
                STDCALL,
                lambda a: SYSTEM_METRICS.get(a[0] & 0xFFFFFFFF, 0),
            ),
            (
                ("gdi32",),
                "GetDeviceCaps",
                2,
                STDCALL,
                lambda a: DEVICE_CAPS.get(a[1] & 0xFFFFFFFF, 0) & 0xFFFFFFFF,
            ),
            (("user32",), "GetMonitorInfoA", 2, STDCALL, lambda a: self.monitor_info(a, wide=False)),
            (("user32",), "GetMonitorInfoW", 2, STDCALL, lambda a: self.monitor_info(a, wide=True)),
        ]

    def simple(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers for APIs Speakeasy has none of."""
        out = [
            (("user32",), "MonitorFromWindow", 2, STDCALL, lambda a: MONITOR),
            (("user32",), "MonitorFromPoint", 3 if self.ptr == 4 else 2, STDCALL, lambda a: MONITOR),
            (("user32",), "MonitorFromRect", 2, STDCALL, lambda a: MONITOR),
        ]
        for suffix, wide in (("A", False), ("W", True)):
            parameters = lambda a, w=wide: self.parameters(a, w)  # noqa: E731
            out.append((("user32",), "SystemParametersInfo" + suffix, 4, STDCALL, parameters))
        return out

    def monitor_info(self, argv: list, wide: bool) -> int:
        """GetMonitorInfo(hMonitor, lpmi): the monitor and its work area; MONITORINFOEX's device name
        too when cbSize has room for it."""
        _monitor, info = argv[:2]
        if not info:
            return 0
        size = int.from_bytes(bytes(self.emu.mem_read(info, 4)), "little")
        data = _i32(size) + rect(0, 0, WIDTH, HEIGHT) + rect(*WORK_AREA) + _i32(MONITORINFOF_PRIMARY)
        device = MONITOR_DEVICE.encode("utf-16-le" if wide else "latin-1")
        device = device.ljust(64 if wide else 32, b"\0")  # CCHDEVICENAME characters
        if size >= len(data) + len(device):
            data += device
        elif size < len(data):
            return 0
        self.emu.mem_write(info, data)
        return 1

    def parameters(self, argv: list, wide: bool) -> int:
        """SystemParametersInfo(uiAction, uiParam, pvParam, fWinIni): the values a Windows 10 desktop
        answers for the settings programs read; a setting changed (SPI_SET*) or one not known here
        succeeds and writes nothing."""
        action, param, out = argv[0] & 0xFFFFFFFF, argv[1] & 0xFFFFFFFF, argv[2]
        data = self._parameter(action, param, out, wide)
        if data is None:
            return 1
        if not out:
            return 0
        self.emu.mem_write(out, data)
        return 1

    def _parameter(self, action: int, param: int, out: int, wide: bool) -> bytes | None:
        if action in _INT_ANSWERS:
            return _i32(_INT_ANSWERS[action])
        if action == SPI_GETWORKAREA:
            return rect(*WORK_AREA)
        if action == SPI_GETMOUSE:
            return _i32(6, 10, 1)  # thresholds and acceleration
        if action == SPI_GETICONTITLELOGFONT:
            return logfont(wide)
        if action == SPI_GETDESKWALLPAPER:
            wallpaper = "C:\\Windows\\web\\wallpaper\\Windows\\img0.jpg"[: max(param - 1, 0)]
            return wallpaper.encode("utf-16-le" if wide else "latin-1") + (b"\0\0" if wide else b"\0")
        if not out:
            return None
        size = int.from_bytes(bytes(self.emu.mem_read(out, 4)), "little")  # the structure's cbSize
        if action == SPI_GETNONCLIENTMETRICS:
            return non_client_metrics(wide, size) if size >= 4 else b""
        if action == SPI_GETMINIMIZEDMETRICS:
            return _i32(size, 160, 0, 0, 8)[:size]  # width, horizontal/vertical gap, ARW_HIDE
        if action == SPI_GETICONMETRICS:
            return (_i32(size, 75, 75, 1) + logfont(wide))[:size]
        if action == SPI_GETANIMATION:
            return _i32(size, 1)[:size]  # iMinAnimate
        if action == SPI_GETHIGHCONTRAST:
            return (_i32(size, 0x7E) + bytes(self.ptr))[:size]  # available, not on; no scheme name
        return None
