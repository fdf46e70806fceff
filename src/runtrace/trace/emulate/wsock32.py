"""WSOCK32's exports by ordinal, named before Speakeasy sees them.

Speakeasy files WSOCK32 (Windows Sockets 1.1) under its WS2_32 handlers and resolves an import by
ordinal through WS2_32's ordinal numbers.  The two DLLs agree on every ordinal but three: in wsock32.dll
10 is `inet_addr`, 11 `inet_ntoa` and 12 `ioctlsocket`; in ws2_32.dll 10 is `ioctlsocket`, 11
`inet_addr` and 12 `inet_ntoa` (Wine's wsock32.spec and ws2_32.spec, the import libraries).  A program
importing WSOCK32 by ordinal had `inet_ntoa(addr)` run as `inet_addr`, which read the address as a
string pointer (the handler raised and the program got 0 for its dotted string), and its
`ioctlsocket(s, FIONBIO, &on)` run as `inet_ntoa` (tracer revision 22: a backdoor faulted after about
600 calls).  Here WSOCK32's ordinal imports are named by WSOCK32's own table, and WS2_32's by its
own (so `recvfrom`, ordinal 17, which Speakeasy has no handler for, reaches the one here); other
exports (`WSARecvEx`, `TransmitFile`, the WSA* functions of Winsock 2...) are left as they were.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

STDCALL = se_arch.CALL_CONV_STDCALL
AF_INET, MSG_PEEK = 2, 2
SOCKET_ERROR, WSAENOTSOCK = 0xFFFFFFFF, 10038

_CLASSIC = (  # ordinals 1-23
    "accept",
    "bind",
    "closesocket",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "htonl",
    "htons",
    "inet_addr",
    "inet_ntoa",
    "ioctlsocket",
    "listen",
    "ntohl",
    "ntohs",
    "recv",
    "recvfrom",
    "select",
    "send",
    "sendto",
    "setsockopt",
    "shutdown",
    "socket",
)
_DATABASE = (  # ordinals 51-57
    "gethostbyaddr",
    "gethostbyname",
    "getprotobyname",
    "getprotobynumber",
    "getservbyname",
    "getservbyport",
    "gethostname",
)
_WSA = (  # ordinals 101-116
    "WSAAsyncSelect",
    "WSAAsyncGetHostByAddr",
    "WSAAsyncGetHostByName",
    "WSAAsyncGetProtoByNumber",
    "WSAAsyncGetProtoByName",
    "WSAAsyncGetServByPort",
    "WSAAsyncGetServByName",
    "WSACancelAsyncRequest",
    "WSASetBlockingHook",
    "WSAUnhookBlockingHook",
    "WSAGetLastError",
    "WSASetLastError",
    "WSACancelBlockingCall",
    "WSAIsBlocking",
    "WSAStartup",
    "WSACleanup",
)
_BY_ORDINAL = {
    **dict(enumerate(_CLASSIC, start=1)),
    **dict(enumerate(_DATABASE, start=51)),
    **dict(enumerate(_WSA, start=101)),
    151: "__WSAFDIsSet",
}


# WS2_32 keeps WSOCK32's numbers but for 10-12.
_WS2_BY_ORDINAL = _BY_ORDINAL | {10: "ioctlsocket", 11: "inet_addr", 12: "inet_ntoa"}
_TABLES = {"wsock32": _BY_ORDINAL, "ws2_32": _WS2_BY_ORDINAL}


def import_name(dll: str, name: str) -> str:
    """The export name of an import from `dll` ("ordinal_N" for one by ordinal): WSOCK32's and WS2_32's
    Winsock 1.1 functions by name, so the handler for the function (Speakeasy's, or one here that
    Speakeasy lacks, such as `recvfrom`) answers, not the one of WS2_32's ordinal."""
    table = _TABLES.get(dll.lower().rsplit(".", 1)[0])
    if table is None or not name.startswith("ordinal_"):
        return name
    number = name[len("ordinal_") :]
    return table.get(int(number), name) if number.isdigit() else name


class Winsock:
    """Socket functions Speakeasy's WS2_32 lacks or answers wrongly.

    - `inet_ntoa(in_addr)`: the dotted address in the thread's one static buffer, which the next call
      overwrites (Windows' documented behaviour).  Speakeasy's handler raised on the second call for an
      address it had seen (`buf` unbound), so a program that resolves the same host twice got NULL.
    - `recvfrom(s, buf, len, flags, from, fromlen)` had no handler (ordinal 17 of both DLLs): the stub
      popped none of its six arguments.  It reads what Speakeasy's `recv` reads (the socket's
      configured response, Speakeasy's default network data) and gives the sender as the socket's peer.
    - `sendto(s, buf, len, flags, to, tolen)` had none either: a datagram is sent whole, so it answers
      `len` (as Speakeasy's `send` does), SOCKET_ERROR for a handle that is no socket.
    - `htons`/`ntohs` take a `u_short` in a 32-bit argument slot whose upper half the caller need not
      clear; Speakeasy passed all 32 bits to Python's `socket.htons`, which raised (OverflowError) and
      the program got 0.  Only the low 16 bits are the argument.
    """

    def __init__(self, se) -> None:
        self.se = se
        self._buffer = 0

    def simple(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        return [
            (("ws2_32", "wsock32"), "recvfrom", 6, STDCALL, self.recvfrom),
            (("ws2_32", "wsock32"), "sendto", 6, STDCALL, self.sendto),
        ]

    def overriding(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        swap16 = lambda a: int.from_bytes((a[0] & 0xFFFF).to_bytes(2, "big"), "little")  # noqa: E731
        return [
            (("ws2_32", "wsock32"), "inet_ntoa", 1, STDCALL, self.inet_ntoa),
            (("ws2_32", "wsock32"), "htons", 1, STDCALL, swap16),
            (("ws2_32", "wsock32"), "ntohs", 1, STDCALL, swap16),
        ]

    def inet_ntoa(self, argv: list) -> int:
        address = argv[0] & 0xFFFFFFFF
        text = ".".join(str(b) for b in address.to_bytes(4, "little"))  # in_addr is in network order
        if not self._buffer:
            self._buffer = self.se.mem_alloc(16, tag="api.ws2_32.inet_ntoa")
        self.se.mem_write(self._buffer, text.encode("ascii") + b"\0")
        return self._buffer

    def recvfrom(self, argv: list) -> int:
        s, buf, size, flags, sender, sender_size = argv[:6]
        emu = self.se.emu
        sock = emu.netman.get_socket(s)
        if sock is None:
            emu.set_last_error(WSAENOTSOCK)
            return SOCKET_ERROR
        data = sock.get_recv_data(size, bool(flags & MSG_PEEK))
        if buf and data:
            self.se.mem_write(buf, data)
        if sender and sender_size:
            host, port = sock.get_connection_info()
            self.se.mem_write(sender, _sockaddr_in(host, port))
            self.se.mem_write(sender_size, struct.pack("<i", 16))
        return len(data)

    def sendto(self, argv: list) -> int:
        s, _buf, size = argv[:3]
        if self.se.emu.netman.get_socket(s) is None:
            self.se.emu.set_last_error(WSAENOTSOCK)
            return SOCKET_ERROR
        return size & 0x7FFFFFFF


def _sockaddr_in(host: str, port: int) -> bytes:
    """sockaddr_in {family AF_INET, port and address in network order, zero padding}."""
    try:
        address = bytes(int(part) for part in host.split("."))
    except ValueError:
        address = b""
    if len(address) != 4:
        address = bytes(4)
    return struct.pack("<H", AF_INET) + struct.pack(">H", port & 0xFFFF) + address + bytes(8)
