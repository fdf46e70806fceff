"""WSOCK32 imports by ordinal reach WSOCK32's functions (`wsock32.py`): its ordinals 10-12 are
inet_addr, inet_ntoa and ioctlsocket, where WS2_32's are ioctlsocket, inet_addr and inet_ntoa; and
inet_ntoa answers the same address twice."""

from __future__ import annotations

from emu_pe import Data, Word, calls
from runtrace.trace.emulate import wsock32
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason


def test_wsock32_ordinals_are_wsock32s_functions():
    data = bytearray(0x400)
    data[0:8] = b"1.2.3.4\0"
    steps = [
        ("wsock32.dll!#10", [Data(0)]),  # inet_addr
        ("wsock32.dll!#11", [0x0100007F], Data(0x100)),  # inet_ntoa(127.0.0.1)
        ("kernel32.dll!lstrlenA", [Word(0x100)]),
        ("wsock32.dll!#11", [0x0100007F], Data(0x104)),  # the same address again
        ("kernel32.dll!lstrlenA", [Word(0x104)]),
    ]
    trace = emulate(calls(steps, bytes(data)), "x", "wsock32")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    assert not [e for e in trace.meta.events if e["type"] == "api_handler_error"]
    names = [c.name for c in trace.api_calls]
    assert names == ["wsock32.inet_addr"] + ["wsock32.inet_ntoa", "kernel32.lstrlenA"] * 2
    assert trace.api_calls[0].result == 0x04030201
    assert trace.api_calls[2].args[0] == trace.api_calls[4].args[0] == "127.0.0.1"


def test_only_wsock32_ordinals_are_renamed():
    assert wsock32.import_name("WSOCK32", "ordinal_12") == "ioctlsocket"
    assert wsock32.import_name("ws2_32", "ordinal_12") == "ordinal_12"
    assert wsock32.import_name("wsock32.dll", "ordinal_1140") == "ordinal_1140"  # WSOCK32-only exports
    assert wsock32.import_name("wsock32", "send") == "send"
