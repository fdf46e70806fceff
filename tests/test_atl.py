"""ATL's registrar stand-in (atl.py): a COM DLL's registration path through atl100.dll, in a small
emulated i386 program that does what Wine's `__wine_register_resources` does."""

import struct
import uuid

from emu_pe import program
from runtrace.trace.emulate import atl
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

IID_OTHER = uuid.UUID("00020400-0000-0000-c000-000000000046").bytes_le  # IDispatch: not a registrar's


def _registering_program() -> bytes:
    data = "atl100.dll\0".encode("utf-16-le").ljust(0x40, b"\0") + b"AtlCreateRegistrar\0".ljust(0x20, b"\0")
    data += "HKCR { NoRemove CLSID { } }\0".encode("utf-16-le").ljust(0x60, b"\0")  # at 0x60
    data += atl.IID_IREGISTRAR + IID_OTHER  # at 0xc0, 0xd0

    def code(lay) -> bytes:
        d = lambda offset: struct.pack("<I", lay.data + offset)  # noqa: E731

        def method(slot: int, *args: bytes) -> bytes:  # registrar->vtbl[slot](registrar, args...)
            out = b"".join(b"\x68" + a for a in reversed(args))  # push each argument, last first
            out += b"\xa1" + d(0x108)  # mov eax, [registrar]
            out += b"\x50"  # push eax (this)
            out += b"\x8b\x08"  # mov ecx, [eax] (the vtable)
            return out + b"\xff\x51" + bytes([4 * slot])  # call [ecx + 4 * slot]

        return (
            b"\x68" + d(0)  # push "atl100.dll"
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "LoadLibraryW"))
            + b"\x68" + d(0x40)  # push "AtlCreateRegistrar"
            + b"\x50"  # push eax (the module)
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "GetProcAddress"))
            + b"\x68" + d(0x108)  # push &registrar
            + b"\xff\xd0"  # call eax: AtlCreateRegistrar(&registrar), stdcall
            + method(3, d(0x40), d(0x40))  # AddReplacement(this, key, value)
            + method(9, d(0x60))  # StringRegister(this, script)
            + method(0, d(0xC0), d(0x110))  # QueryInterface(this, IID_IRegistrar, &out)
            + method(0, d(0xD0), d(0x114))  # QueryInterface(this, IID_IDispatch, &out)
            + method(10, d(0x60))  # StringUnregister(this, script)
            + method(2)  # Release(this)
            + b"\xc3"  # ret: reached only with every call's arguments popped as stdcall
        )  # fmt: skip

    return program("i386", code, {"kernel32.dll": ["LoadLibraryW", "GetProcAddress"]}, data=data)


def test_the_registration_path_runs_through_the_registrar_to_the_end():
    trace = emulate(_registering_program(), "x", "register")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    calls = {c.name.split(".", 1)[1]: c for c in trace.api_calls}
    assert calls["LoadLibraryW"].result  # the DLL loads ...
    assert calls["GetProcAddress"].result  # ... and has the export
    names = [c.name for c in trace.api_calls[2:]]
    assert names == [
        "atl100.AtlCreateRegistrar", "atl100.IRegistrar_AddReplacement", "atl100.IRegistrar_StringRegister",
        "atl100.IRegistrar_QueryInterface", "atl100.IRegistrar_QueryInterface",
        "atl100.IRegistrar_StringUnregister", "atl100.IRegistrar_Release",
    ]  # fmt: skip
    results = [c.result for c in trace.api_calls[2:]]
    assert results[:3] == [atl.S_OK] * 3 and results[5] == atl.S_OK
    assert results[3:5] == [atl.S_OK, atl.E_NOINTERFACE]  # the registrar's own interface only
    assert results[6] >= 1  # a reference count
