"""The same file gives the same trace, whenever and wherever it is traced.

Speakeasy answers `GetSystemTimeAsFileTime`, `GetSystemTime`, `GetSystemTimePreciseAsFileTime` and
FindFirstFile's file times from the host's clock, winmm's `timeGetTime` from the host's monotonic clock,
and `UuidCreate` from Python's unseeded random numbers.  A program that mixes the time into a value it
later branches on (MSVC's start-up code builds its security cookie from the system time, and packers
derive keys from it) took a different path every time it was traced: one capa sample ran 1,800 or
26,000 instructions depending on the second it was traced in.

Here the emulated machine's clock starts at a fixed instant and moves on by a fixed step each time it is
read (programs that wait for time to pass still see it pass), and UUIDs come from a generator seeded
the same way for every run.

Speakeasy also keeps state in its classes rather than its emulator: the counters that number handles
and thread ids, and the list of loader entries every process's module list is built from.  A second
emulation in one process started from where the first left them: other handle values, and a PEB module
list still holding the first program's modules, at addresses the second never mapped (malware walks
that list to find kernel32).  `install()` resets all of it at the start of each emulation.
"""

from __future__ import annotations

import datetime as _datetime
import random
import types

from speakeasy.windows import cryptman, fileman, netman, objman, regman, sessman
from speakeasy.winenv.api.usermode import kernel32, rpcrt4, winmm

# A Monday morning, UTC; the emulated machine's local time zone is UTC too.
START = _datetime.datetime(2024, 6, 3, 9, 30, 0, tzinfo=_datetime.UTC)
STEP = _datetime.timedelta(milliseconds=15)  # about the resolution of the Windows system clock
UUID_SEED = 0x52554E54  # "RUNT"


class _Clock:
    def __init__(self) -> None:
        self.reads = 0

    def now(self) -> _datetime.datetime:
        self.reads += 1
        return START + self.reads * STEP


_clock = _Clock()


class _EmulatedDatetime(_datetime.datetime):
    """`datetime.datetime` whose now() and utcnow() read the emulated clock (time-zone aware, so that
    `.timestamp()` does not depend on the host's time zone)."""

    @classmethod
    def now(cls, tz=None):
        now = _clock.now()
        return now if tz is None else now.astimezone(tz)

    @classmethod
    def utcnow(cls):
        return _clock.now()


def _seconds() -> float:
    return (_clock.now() - START).total_seconds() + START.timestamp()


_emulated_datetime = types.SimpleNamespace(
    datetime=_EmulatedDatetime, date=_datetime.date, time=_datetime.time, timedelta=_datetime.timedelta
)
_emulated_time = types.SimpleNamespace(
    time=_seconds,
    time_ns=lambda: int(_seconds() * 1e9),
    monotonic=lambda: (_clock.now() - START).total_seconds(),
)


# Class attributes Speakeasy counts handles and ids with, and their values before any emulation.
_COUNTERS = {
    (cls, name): getattr(cls, name)
    for cls, name in [
        (objman.Console, "curr_handle"),
        (objman.KernelObject, "curr_handle"),
        (objman.KernelObject, "curr_id"),
        (sessman.GuiObject, "curr_handle"),
        (netman.WininetComponent, "curr_handle"),
        (fileman.FileMap, "curr_handle"),
        (fileman.File, "curr_handle"),
        (fileman.Pipe, "curr_handle"),
        (regman.RegKey, "curr_handle"),
        (cryptman.CryptContext, "curr_handle"),
    ]
}
_LOADER_LISTS = [objman.Process, objman.Driver]


def install() -> None:
    """Point Speakeasy's handlers at the emulated clock, and start the clock, the UUID generator and
    Speakeasy's class-level counters and lists afresh."""
    for (cls, name), value in _COUNTERS.items():
        setattr(cls, name, value)
    for cls in _LOADER_LISTS:
        cls.ldr_entries = []
    _clock.reads = 0
    kernel32.datetime = _emulated_datetime
    kernel32.time = _emulated_time
    winmm.time = _emulated_time
    rpcrt4.random = random.Random(UUID_SEED)
