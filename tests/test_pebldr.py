"""A first read of the PEB's loader data (PEB.Ldr) at its first field finds it mapped (emulator.py)."""

import struct

from emu_pe import program
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason


def test_the_first_field_of_the_loader_data_is_readable():
    def code(lay) -> bytes:
        call_end = lay.text + 4 + 9 + 4 + 3 + 6
        return (
            b"\x48\x83\xec\x28"  # sub rsp, 0x28
            + b"\x65\x48\x8b\x04\x25\x60\x00\x00\x00"  # mov rax, gs:[0x60]  (the PEB)
            + b"\x48\x8b\x40\x18"  # mov rax, [rax + 0x18]  (Ldr)
            + b"\x0f\xb7\x08"  # movzx ecx, word ptr [rax]  (Length: its first field)
            + b"\xff\x15" + struct.pack("<i", lay.slot("kernel32.dll", "Sleep") - call_end)  # call [Sleep]
            + b"\x48\x83\xc4\x28"  # add rsp, 0x28
            + b"\xc3"  # ret
        )  # fmt: skip

    trace = emulate(program("amd64", code, {"kernel32.dll": ["Sleep"]}), "x", "pebldr")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    assert not [e for e in trace.meta.events if e["type"] == "zero_pages"]
    assert [c.name for c in trace.api_calls] == ["kernel32.Sleep"]
