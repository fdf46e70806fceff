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
    assert wsock32.import_name("ws2_32", "ordinal_12") == "inet_ntoa"
    assert wsock32.import_name("ws2_32", "ordinal_17") == "recvfrom"
    assert wsock32.import_name("kernel32", "ordinal_12") == "ordinal_12"
    assert wsock32.import_name("wsock32.dll", "ordinal_1140") == "ordinal_1140"  # WSOCK32-only exports
    assert wsock32.import_name("wsock32", "send") == "send"


def test_datagram_functions_and_the_short_byte_swaps():
    data = bytearray(0x400)
    data[0:6] = b"hello\0"
    data[0x220:0x224] = (16).to_bytes(4, "little")
    steps = [
        ("ws2_32.dll!socket", [2, 2, 0], Data(0x10)),  # AF_INET, SOCK_DGRAM
        ("ws2_32.dll!#17", [Word(0x10), Data(0x100), 16, 0, Data(0x200), Data(0x220)]),  # recvfrom
        ("ws2_32.dll!sendto", [Word(0x10), Data(0), 5, 0, Data(0x200), 16]),
        ("ws2_32.dll!sendto", [0x777, Data(0), 5, 0, Data(0x200), 16]),  # no such socket
        ("ws2_32.dll!htons", [0x12340050]),  # only the low 16 bits are the u_short
        ("ws2_32.dll!ntohs", [0x5000]),
    ]
    trace = emulate(calls(steps, bytes(data)), "x", "udp")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    assert not [e for e in trace.meta.events if e["type"] in ("api_handler_error", "unsupported_api")]
    results = [c.result for c in trace.api_calls]
    assert [c.name for c in trace.api_calls][1] == "ws2_32.recvfrom"
    assert 0 < results[1] <= 16  # the socket's configured response, as recv reads it
    assert results[2:] == [5, 0xFFFFFFFF, 0x5000, 0x50]
