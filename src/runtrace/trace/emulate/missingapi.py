"""Windows APIs Speakeasy lacks that malware of corpus v2 called just before its run ended early
(tracer revision 20; `docs/results.md`, "What the emulator could fix next").

Counted over the traced corpus: among the last six calls of malware runs that exited or faulted with
fewer than 1,000 API calls, x86 `RtlUnwind` (23 runs), `MapVirtualKeyW` (13), `MulDiv` (12) and
`GetTimeZoneInformation` (11) had no handler, so the stub's 0 sent the program down an error path (and
the stub of a stdcall API popped no arguments); 83 malicious traces call
`SHGetSpecialFolderPathA`, whose stub wrote no path.  `GetTempFileNameA` had no handler either, which
stopped every bdist_wininst installer of the corpus at about 500 instructions, and Speakeasy's
`GetTempFileNameW` names the file after the wall clock (a trace that differs from run to run) and
returns the name's length where Windows returns the unique number.

The bdist_wininst installers then stopped at `DosDateTimeToFileTime` and `SetFileTime` (stamping what
they extract from their archive), with the local/UTC conversions beside them.

Each handler does what a program needs to go on, with Speakeasy's objects behind it (its emulated file
system, its user profile's folders), not a full reimplementation.
"""

from __future__ import annotations

import datetime
import ntpath
import struct
from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate.apigroup import ApiGroup

STDCALL = se_arch.CALL_CONV_STDCALL
MAX_PATH = 260
TIME_ZONE_ID_UNKNOWN = 0
# The first unique number GetTempFileName picks when the program leaves it to the system (Windows starts
# from the tick count; a constant keeps traces repeatable).
FIRST_TEMP_UNIQUE = 0x1A2B

# FILETIME counts 100 ns intervals since 1601-01-01; MS-DOS dates count years from 1980.
_FILETIME_1980 = 0x01A8E79FE1D58000  # 1980-01-01 00:00:00
_TICKS_PER_SECOND = 10_000_000

# US keyboard layout, scan code set 1: virtual-key code -> scan code (MapVirtualKey's tables).
_LETTER_ROWS = {"QWERTYUIOP": 0x10, "ASDFGHJKL": 0x1E, "ZXCVBNM": 0x2C}
_SCAN = {ord(c): first + i for row, first in _LETTER_ROWS.items() for i, c in enumerate(row)}
_SCAN.update({ord(str(d)): 0x02 + (d - 1) for d in range(1, 10)} | {ord("0"): 0x0B})
_SCAN.update({
    0x08: 0x0E,  # VK_BACK
    0x09: 0x0F,  # VK_TAB
    0x0D: 0x1C,  # VK_RETURN
    0x10: 0x2A,  # VK_SHIFT
    0x11: 0x1D,  # VK_CONTROL
    0x12: 0x38,  # VK_MENU
    0x14: 0x3A,  # VK_CAPITAL
    0x1B: 0x01,  # VK_ESCAPE
    0x20: 0x39,  # VK_SPACE
})  # fmt: skip
_VK = {scan: vk for vk, scan in _SCAN.items()}
# MapVirtualKey's map types.
MAPVK_VK_TO_VSC, MAPVK_VSC_TO_VK, MAPVK_VK_TO_CHAR, MAPVK_VSC_TO_VK_EX, MAPVK_VK_TO_VSC_EX = range(5)


def map_virtual_key(code: int, map_type: int) -> int:
    """MapVirtualKey on a US layout: 0 where there is no translation, as Windows answers."""
    if map_type in (MAPVK_VK_TO_VSC, MAPVK_VK_TO_VSC_EX):
        return _SCAN.get(code, 0)
    if map_type in (MAPVK_VSC_TO_VK, MAPVK_VSC_TO_VK_EX):
        return _VK.get(code, 0)
    if map_type == MAPVK_VK_TO_CHAR:
        if ord("A") <= code <= ord("Z") or ord("0") <= code <= ord("9") or code in (0x08, 0x09, 0x0D, 0x20):
            return code
        return 0
    return 0


def mul_div(number: int, numerator: int, denominator: int) -> int:
    """MulDiv: number * numerator / denominator in 64 bits, rounded half away from zero; -1 when the
    denominator is 0 or the result does not fit in 32 signed bits."""
    a, b, c = (_signed32(v) for v in (number, numerator, denominator))
    if c == 0:
        return -1
    product = a * b
    quotient, remainder = divmod(abs(product), abs(c))
    if 2 * remainder >= abs(c):
        quotient += 1
    result = quotient if (product >= 0) == (c > 0) else -quotient
    return result if -(2**31) <= result < 2**31 else -1


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value


def dos_date_time_to_file_time(dos_date: int, dos_time: int) -> int | None:
    """The FILETIME of an MS-DOS date and time (two-second resolution), None where the date is not a
    date (DosDateTimeToFileTime fails)."""
    day, month, year = dos_date & 0x1F, (dos_date >> 5) & 0xF, 1980 + ((dos_date >> 9) & 0x7F)
    seconds, minutes, hours = (dos_time & 0x1F) * 2, (dos_time >> 5) & 0x3F, (dos_time >> 11) & 0x1F
    try:
        moment = datetime.datetime(year, month, day, hours, minutes, seconds)
    except ValueError:
        return None
    elapsed = moment - datetime.datetime(1980, 1, 1)
    return _FILETIME_1980 + (elapsed.days * 86_400 + elapsed.seconds) * _TICKS_PER_SECOND


def file_time_to_dos_date_time(file_time: int) -> tuple[int, int] | None:
    """(date, time) in MS-DOS form, None outside 1980-2107 as FileTimeToDosDateTime fails."""
    if file_time < _FILETIME_1980:
        return None
    moment = datetime.datetime(1980, 1, 1) + datetime.timedelta(
        seconds=(file_time - _FILETIME_1980) // _TICKS_PER_SECOND
    )
    if moment.year > 2107:
        return None
    date = ((moment.year - 1980) << 9) | (moment.month << 5) | moment.day
    time = (moment.hour << 11) | (moment.minute << 5) | (moment.second // 2)
    return date, time


def time_zone_information() -> bytes:
    """TIME_ZONE_INFORMATION of a system on UTC without daylight saving time (the emulated clock's zone):
    Bias, StandardName[32], StandardDate, StandardBias, DaylightName[32], DaylightDate, DaylightBias."""
    name = "Coordinated Universal Time".encode("utf-16-le").ljust(64, b"\0")
    no_transition = bytes(16)  # a zeroed SYSTEMTIME: no change of time
    return (
        struct.pack("<l", 0) + name + no_transition + struct.pack("<l", 0) + name + no_transition + bytes(4)
    )


class MissingApis(ApiGroup):
    def __init__(self, se, ptr: int) -> None:
        super().__init__(se, ptr)
        self._next_unique = FIRST_TEMP_UNIQUE
        self._folder_buffer = 0  # where Speakeasy's SHGetFolderPath writes, for SHGetSpecialFolderPath

    def simple(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers for APIs Speakeasy has none of: (modules, name, argc, convention, fn(argv))."""
        k32 = ("kernel32", "kernelbase")
        out = [
            (k32, "MulDiv", 3, STDCALL, lambda a: mul_div(*a[:3]) & 0xFFFFFFFF),
            (k32, "GetTimeZoneInformation", 1, STDCALL, self.time_zone),
            (k32, "GetTempFileNameA", 4, STDCALL, lambda a: self.temp_file_name(a, False)),
            (k32, "DosDateTimeToFileTime", 3, STDCALL, self.dos_to_file_time),
            (k32, "FileTimeToDosDateTime", 3, STDCALL, self.file_to_dos_time),
            # The emulated clock's zone is UTC (GetTimeZoneInformation): local file time is file time.
            (k32, "LocalFileTimeToFileTime", 2, STDCALL, self.copy_file_time),
            (k32, "FileTimeToLocalFileTime", 2, STDCALL, self.copy_file_time),
            # Installers stamp what they extract; the emulated file system keeps no times.
            (k32, "SetFileTime", 4, STDCALL, lambda a: 1),
        ]
        for suffix, wide in (("A", False), ("W", True)):
            out += [
                (("user32",), "MapVirtualKey" + suffix, 2, STDCALL, lambda a: map_virtual_key(a[0], a[1])),
                (("user32",), "MapVirtualKeyEx" + suffix, 3, STDCALL, lambda a: map_virtual_key(a[0], a[1])),
                (
                    ("shell32",),
                    "SHGetSpecialFolderPath" + suffix,
                    4,
                    STDCALL,
                    lambda a, wide=wide: self.special_folder(a, wide),
                ),
            ]
        if self.ptr == 4:  # amd64's RtlUnwind walks the unwind tables (`seh64.py`)
            out.append(((*k32, "ntdll"), "RtlUnwind", 4, STDCALL, self.rtl_unwind))
        return out

    def overriding(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers that replace Speakeasy's: its GetTempFileNameW names the file after the wall clock."""
        return [
            (
                ("kernel32", "kernelbase"),
                "GetTempFileNameW",
                4,
                STDCALL,
                lambda a: self.temp_file_name(a, True),
            )
        ]

    # -- handlers --------------------------------------------------------------------------------------

    def time_zone(self, argv: list) -> int:
        if argv[0]:
            self.emu.mem_write(argv[0], time_zone_information())
        return TIME_ZONE_ID_UNKNOWN

    def rtl_unwind(self, argv: list) -> int:
        """RtlUnwind(TargetFrame, TargetIp, ExceptionRecord, ReturnValue), x86: the registrations above
        `TargetFrame` leave the thread's exception list (all of them with no target), and the caller goes
        on with ReturnValue in eax.  The handlers of the frames removed are not called for the unwind (a
        `__finally` between the fault and the handling frame does not run).  The runtime's
        `_global_unwind2` calls it from a Visual C++ 6 program's `__except` path: the stub popped none of
        the four arguments, and the caller's epilogue restored registers from the wrong slots."""
        target, _ip, _record, value = argv[:4]
        thread = self.emu.get_current_thread()
        if thread is not None:
            head = target or 0xFFFFFFFF
            self.emu.mem_write(thread.get_teb().address, head.to_bytes(4, "little"))
        return value

    def dos_to_file_time(self, argv: list) -> int:
        dos_date, dos_time, out = argv[:3]
        value = dos_date_time_to_file_time(dos_date & 0xFFFF, dos_time & 0xFFFF)
        if value is None or not out:
            return 0
        self.emu.mem_write(out, struct.pack("<Q", value))
        return 1

    def file_to_dos_time(self, argv: list) -> int:
        at, date_out, time_out = argv[:3]
        if not at:
            return 0
        dos = file_time_to_dos_date_time(struct.unpack("<Q", self.emu.mem_read(at, 8))[0])
        if dos is None:
            return 0
        for out, value in zip((date_out, time_out), dos, strict=True):
            if out:
                self.emu.mem_write(out, struct.pack("<H", value))
        return 1

    def copy_file_time(self, argv: list) -> int:
        source, out = argv[:2]
        if not source or not out:
            return 0
        self.emu.mem_write(out, self.emu.mem_read(source, 8))
        return 1

    def temp_file_name(self, argv: list, wide: bool) -> int:
        """GetTempFileName(path, prefix, unique, out): `path\\PREuuuu.TMP` (the prefix's first three
        characters, the unique number in hex).  With unique 0 the system picks the number and creates the
        empty file, as Windows does; it returns the number used."""
        path_at, prefix_at, unique, out = argv[:4]
        path = self._string(path_at, wide)
        prefix = self._string(prefix_at, wide)[:3]
        chosen = unique & 0xFFFF
        if not chosen:
            chosen = self._next_unique
            self._next_unique = self._next_unique % 0xFFFF + 1
        name = ntpath.join(path, f"{prefix}{chosen:X}.TMP") if path else f"{prefix}{chosen:X}.TMP"
        argv[0], argv[1] = path, prefix
        if out:
            self._write_path(out, name, wide)
        if not unique:
            created = self.emu.file_get(self.emu.fileman.file_open(name, create=True, truncate=True))
            if created is not None:
                created.remove_data()
        return chosen

    def special_folder(self, argv: list, wide: bool) -> int:
        """SHGetSpecialFolderPath(hwnd, out, csidl, create): the folder Speakeasy's SHGetFolderPath gives
        for the CSIDL (its user's profile), written as the caller's character width; TRUE."""
        _hwnd, out, csidl = argv[:3]
        path = self.csidl_path(csidl)
        if out:
            self._write_path(out, path, wide)
        argv[1] = path
        return 1

    def csidl_path(self, csidl: int) -> str:
        """The folder Speakeasy's SHGetFolderPath gives for a CSIDL (flags such as CSIDL_FLAG_CREATE
        masked off), which every shell folder API here answers with, so they all agree."""
        if not self._folder_buffer:
            self._folder_buffer = self.se.mem_alloc(MAX_PATH * 2, tag="api.SHGetSpecialFolderPath")
        self.emu.mem_write(self._folder_buffer, bytes(MAX_PATH * 2))
        shell32 = self.emu.api.load_api_handler("shell32")
        shell32.SHGetFolderPath(self.emu, [0, csidl & 0xFF, 0, 0, self._folder_buffer], {})
        return self.emu.read_mem_string(self._folder_buffer, 1)

    def _write_path(self, address: int, path: str, wide: bool) -> None:
        """A path as Windows writes one into a MAX_PATH buffer: at most 259 characters and the NUL."""
        data = path[: MAX_PATH - 1].encode("utf-16-le" if wide else "latin-1", "replace")
        self.emu.mem_write(address, data + (b"\0\0" if wide else b"\0"))

    def _string(self, address: int, wide: bool) -> str:
        return self.emu.read_mem_string(address, 2 if wide else 1) if address else ""
