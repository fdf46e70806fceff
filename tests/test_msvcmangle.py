"""Argument bytes of x86 C++ functions from their Visual C++ mangled names (tracer revision 19), and
stubbed C++ imports that pop them in an emulated program."""

import struct

import pytest

from emu_pe import calls, program
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.emulate.msvcmangle import popped_bytes
from runtrace.trace.model import StopReason

STRING = "?$basic_string@DU?$char_traits@D@std@@V?$allocator@D@2@@std@@"


@pytest.mark.parametrize(
    ("name", "popped"),
    [
        (f"?_Tidy@{STRING}AAEX_N@Z", 4),  # thiscall, one bool: `this` is in ecx
        (f"?_Copy@{STRING}AAEXI@Z", 4),
        (f"?assign@{STRING}QAEAAV12@PBDI@Z", 8),  # back-references in the return type
        (f"?append@{STRING}QAEAAV12@ABV12@II@Z", 12),  # a reference, two unsigned ints
        (f"??0{STRING}QAE@PBDABV?$allocator@D@1@@Z", 8),  # a constructor: no return type
        ("??0_Winit@std@@QAE@XZ", 0),  # (void)
        ("??1_Winit@std@@QAE@XZ", 0),
        ("?foo@@YGXNH_J@Z", 20),  # stdcall: a double and an __int64 take two slots each
        ("?cb@@YGXP6GHH@ZH@Z", 8),  # a function pointer and an int
        ("?baz@@YAXHH@Z", 0),  # cdecl: the caller pops
        ("?getAndRef@ExternalRefCountData@QtSharedPointer@@SAPAU12@PBVQObject@@@Z", 0),  # static cdecl
        ("??4CString@@QAEABV0@PBD@Z", 4),  # operator=
        ("?bar@@YGXVFoo@@@Z", None),  # a class by value: its size is not in the name
        ("?x@@3HA", None),  # data, not a function
        ("GetProcAddress", None),  # not mangled
        ("?broken@@YGXP", None),  # cut short
    ],
)
def test_popped_bytes_from_mangled_names(name, popped):
    assert popped_bytes(name) == popped


def test_stubbed_cpp_imports_pop_their_arguments():
    # A stdcall and a thiscall member with arguments: the program's final `ret` reaches the emulator
    # only if each stub popped exactly them (before, none were popped and the `ret` went astray).
    member = f"?_Copy@{STRING}AAEXI@Z"
    trace = emulate(
        calls([("missing.dll!?foo@@YGXNH_J@Z", [1, 2, 3, 4, 5]), ("msvcp60.dll!" + member, [7])]),
        "x",
        "mangled",
    )
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    assert len(trace.api_calls) == 2


def test_a_stubbed_constructor_returns_this():
    constructor = "??0_Winit@std@@QAE@XZ"

    def code(lay) -> bytes:
        return (
            b"\xb9" + struct.pack("<I", 0x00515000)  # mov ecx, 0x515000   (`this`)
            + b"\xff\x15" + struct.pack("<I", lay.slot("msvcp60.dll", constructor))  # call [ctor]
            + b"\x50"  # push eax
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "Sleep"))  # call [Sleep]
            + b"\xc3"  # ret
        )  # fmt: skip

    image = program("i386", code, {"msvcp60.dll": [constructor], "kernel32.dll": ["Sleep"]})
    trace = emulate(image, "x", "constructor")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    assert [c.args[0] for c in trace.api_calls if c.name == "kernel32.Sleep"] == [0x515000]
