"""A C++ program's start (tracer revision 17): the C runtime's initialisers, MFC's application start.

Small i386 programs (`emu_pe.calls`); functions the emulator calls back are placed in the code section
from 0x800 on and report through `Sleep`, whose recorded argument shows what they saw.
"""

import struct

from emu_pe import DATA_RVA, DATA_SIZE, IMAGE_BASE, TEXT_RVA, Data, Word, calls
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

SLEEP = "kernel32.dll!Sleep"
TEXT = IMAGE_BASE["i386"] + TEXT_RVA
DATA = IMAGE_BASE["i386"] + DATA_RVA + DATA_SIZE // 2  # where `calls` programs' data area lies


def _run(steps, data=b"", **kwargs):
    trace = emulate(calls(steps, data, **kwargs), "x", "cppstart")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    return trace


def _sleeps(trace) -> list[int]:
    return [c.args[0] for c in trace.api_calls if c.name == "kernel32.Sleep"]


def _reporter(value: int, result: int):
    """A function that calls Sleep(value) and returns `result` (cdecl, no arguments)."""

    def code(lay):
        return (
            b"\x68" + struct.pack("<I", value)  # push value
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "Sleep"))  # call [Sleep]
            + b"\xb8" + struct.pack("<I", result)  # mov eax, result
            + b"\xc3"  # ret
        )  # fmt: skip

    return code


def _table(*functions: int) -> bytes:
    return b"".join(struct.pack("<I", f) for f in functions)


def test_initterm_calls_each_initialiser_in_order_and_returns_to_the_program():
    # A C++ program's global constructors are such a table; Speakeasy's `_initterm` called none.
    table = _table(0, TEXT + 0x800, 0, TEXT + 0x900)
    trace = _run(
        [
            ("msvcrt.dll!_initterm", [Data(0), Data(len(table))], "cdecl"),
            ("kernel32.dll!GetCurrentProcessId", []),
        ],
        table,
        code_at={0x800: _reporter(1, 0), 0x900: _reporter(2, 0)},
        extra_imports=(SLEEP,),
    )
    assert [c.name for c in trace.api_calls] == [
        "msvcrt._initterm", "kernel32.Sleep", "kernel32.Sleep", "kernel32.GetCurrentProcessId",
    ]  # fmt: skip
    assert _sleeps(trace) == [1, 2]


def test_initterm_e_stops_at_the_first_initialiser_that_fails_and_returns_its_error():
    table = _table(TEXT + 0x800, TEXT + 0x900, TEXT + 0xA00)
    trace = _run(
        [
            ("ucrtbase.dll!_initterm_e", [Data(0), Data(len(table))], "cdecl", Data(0x40)),
            (SLEEP, [Word(0x40)]),
        ],
        table,
        code_at={0x800: _reporter(1, 0), 0x900: _reporter(2, 5), 0xA00: _reporter(3, 0)},
    )
    assert _sleeps(trace) == [1, 2, 5]


def test_getmainargs_leaves_its_arguments_to_the_caller():
    # Speakeasy popped them (stdcall) and the caller's `add esp, 20` then took 20 bytes too many: the
    # program's `ret` went astray.
    trace = _run([
        ("msvcrt.dll!__getmainargs", [Data(0), Data(4), Data(8), 0, Data(12)], "cdecl"),
        (SLEEP, [Word(0)]),  # argc
    ])  # fmt: skip
    assert _sleeps(trace) == [2]


MFC = "mfc42.dll"
APP = DATA + 0x100  # the program's global application object
VTABLE = DATA + 0x200
INIT_INSTANCE, EXIT_INSTANCE = 22, 28  # CWinThread's first and seventh virtual functions in MFC 4.2


def _mfc_program() -> bytes:
    def constructor(lay):  # theApp's constructor, run by _initterm: CWinApp::CWinApp(NULL), then its vtable
        return (
            b"\xb9" + struct.pack("<I", APP)  # mov ecx, APP
            + b"\x6a\x00"  # push 0
            + b"\xff\x15" + struct.pack("<I", lay.slot(MFC, "#561"))  # call [CWinApp::CWinApp]
            + b"\xc7\x05" + struct.pack("<II", APP, VTABLE)  # mov dword ptr [APP], VTABLE
            + b"\xc3"  # ret
        )  # fmt: skip

    def init_instance(lay):  # Sleep(this), Sleep(AfxGetModuleState()->m_pCurrentWinApp), return FALSE
        return (
            b"\x51"  # push ecx
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "Sleep"))  # call [Sleep]
            + b"\xff\x15" + struct.pack("<I", lay.slot(MFC, "#1168"))  # call [AfxGetModuleState]
            + b"\xff\x70\x04"  # push dword ptr [eax + 4]
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "Sleep"))  # call [Sleep]
            + b"\x31\xc0"  # xor eax, eax
            + b"\xc3"  # ret
        )  # fmt: skip

    vtable = bytearray(4 * (EXIT_INSTANCE + 1))
    struct.pack_into("<I", vtable, 4 * INIT_INSTANCE, TEXT + 0x900)
    struct.pack_into("<I", vtable, 4 * EXIT_INSTANCE, TEXT + 0xA00)
    data = _table(TEXT + 0x800).ljust(0x200, b"\0") + bytes(vtable)
    return calls(
        [
            ("msvcrt.dll!_initterm", [Data(0), Data(4)], "cdecl"),
            (f"{MFC}!#1576", [IMAGE_BASE["i386"], 0, 0, 10], Data(0x40)),  # AfxWinMain
            (SLEEP, [Word(0x40)]),
        ],
        data,
        code_at={0x800: constructor, 0x900: init_instance, 0xA00: _reporter(0x28, 7)},
        extra_imports=(SLEEP, f"{MFC}!#561", f"{MFC}!#1168"),
    )


def test_mfc_application_start_runs_the_programs_init_instance_and_exit_instance():
    # AfxWinMain calls the application object's InitInstance, then (it returned FALSE) ExitInstance,
    # through the vtable the program stored in the object its CWinApp constructor import was given.
    trace = emulate(_mfc_program(), "x", "mfc")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    # this, the module state's application, then ExitInstance's report and result
    assert _sleeps(trace) == [APP, APP, 0x28, 7]
    names = [c.name for c in trace.api_calls]
    assert names[:3] == ["msvcrt._initterm", "mfc42.ordinal_561", "mfc42.ordinal_1576"]
