"""The causes benchmarks/short_traces.py gives short traces, on hand-made traces."""

import numpy as np
import pytest
from benchmarks.short_traces import classify

from runtrace.trace.model import ApiCall, Arch, StopReason, Trace, TraceMeta

WINDOWS = {"kernel32", "ntdll", "user32", "advapi32", "msvcrt"}


def _trace(stop, detail, calls, events=()):
    meta = TraceMeta("x", Arch.X86, "emulator", stop, detail, events=list(events))
    api = [
        ApiCall(i, name, 0x401000, supported, tuple(args)) for i, (name, supported, args) in enumerate(calls)
    ]
    return Trace(meta, [], np.zeros(0), api)


def fault(detail, *calls):
    return _trace(StopReason.EMULATION_FAULT, detail, calls)


def ends(*calls, events=()):
    return _trace(StopReason.EXITED, "", calls, events)


def ok(name, *args):
    return (name, True, args)


def stub(name):
    return (name, False, ())


@pytest.mark.parametrize(
    ("trace", "cause"),
    [
        (fault("invalid_read at 0x10 in module_entry"), "unmapped read/write"),
        (fault("Invalid instruction (UC_ERR_INSN_INVALID) at 0x4010"), "unsupported instruction"),
        (fault("unhandled_exception 0x80000100 at 0x1 in export.X"), "genuinely ends"),
        (fault("invalid_fetch at 0x0 in module_entry", stub("GDI32.CreateDCW")), "unsupported API"),
        (fault("invalid_fetch at 0x0 in module_entry", stub("MFC42.ordinal_800")), "missing DLL"),
        (fault("invalid_fetch at 0x7ff00000 in module_entry"), "unmapped fetch"),
        (ends(ok("MFC42.ordinal_1576"), ok("MSVCRT.exit")), "missing DLL"),
        (ends(ok("kernel32.LoadLibraryW", "atl100.dll"), ok("kernel32.FreeLibrary")), "missing DLL"),
        (ends(ok("kernel32.LoadLibraryW", "user32.dll")), "genuinely ends"),
        (ends(stub("advapi32.EventRegister"), ok("msvcrt.exit")), "unsupported API"),
        (ends(stub("ntdll.__wine_dbg_output"), ok("msvcrt.exit")), "genuinely ends"),
        (ends(events=[{"type": "api_handler_error", "name": "msvcrt.sprintf: UcError"}]), "unsupported API"),
        (
            ends(
                ok("kernel32.IsDebuggerPresent"),
                ok("kernel32.Sleep"),
                ok("kernel32.GetTickCount"),
                ok("kernel32.ExitProcess"),
            ),
            "anti-emulation check",
        ),  # fmt: skip
        (
            ends(ok("kernel32.GetModuleHandleA", "SbieDll.dll"), ok("kernel32.ExitProcess")),
            "anti-emulation check",
        ),
        (ends(ok("user32.MessageBoxA"), ok("kernel32.ExitProcess")), "genuinely ends"),
    ],
)
def test_causes(trace, cause):
    assert classify(trace, WINDOWS)[0] == cause
