"""WSOCK32's exports by ordinal, named before Speakeasy sees them.

Speakeasy files WSOCK32 (Windows Sockets 1.1) under its WS2_32 handlers and resolves an import by
ordinal through WS2_32's ordinal numbers.  The two DLLs agree on every ordinal but three: in wsock32.dll
10 is `inet_addr`, 11 `inet_ntoa` and 12 `ioctlsocket`; in ws2_32.dll 10 is `ioctlsocket`, 11
`inet_addr` and 12 `inet_ntoa` (Wine's wsock32.spec and ws2_32.spec, the import libraries).  A program
importing WSOCK32 by ordinal had `inet_ntoa(addr)` run as `inet_addr`, which read the address as a
string pointer (the handler raised and the program got 0 for its dotted string), and its
`ioctlsocket(s, FIONBIO, &on)` run as `inet_ntoa` (tracer revision 22: a backdoor faulted after about
600 calls).  Here WSOCK32's ordinal imports are named by WSOCK32's own table; WSOCK32-only exports
(`WSARecvEx`, `TransmitFile`...) are left as they were.
"""

from __future__ import annotations

from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

STDCALL = se_arch.CALL_CONV_STDCALL

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


def import_name(dll: str, name: str) -> str:
    """The export name of an import from `dll` ("ordinal_N" for one by ordinal), WSOCK32's by name."""
    if dll.lower().rsplit(".", 1)[0] != "wsock32" or not name.startswith("ordinal_"):
        return name
    number = name[len("ordinal_") :]
    return _BY_ORDINAL.get(int(number), name) if number.isdigit() else name


class Inet:
    """`inet_ntoa(in_addr)`: the dotted address in the thread's one static buffer, which the next call
    overwrites (Windows' documented behaviour).  Speakeasy's handler raised on the second call for an
    address it had seen (`buf` unbound), so a program that resolves the same host twice got NULL."""

    def __init__(self, se) -> None:
        self.se = se
        self._buffer = 0

    def overriding(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        return [(("ws2_32", "wsock32"), "inet_ntoa", 1, STDCALL, self.inet_ntoa)]

    def inet_ntoa(self, argv: list) -> int:
        address = argv[0] & 0xFFFFFFFF
        text = ".".join(str(b) for b in address.to_bytes(4, "little"))  # in_addr is in network order
        if not self._buffer:
            self._buffer = self.se.mem_alloc(16, tag="api.ws2_32.inet_ntoa")
        self.se.mem_write(self._buffer, text.encode("ascii") + b"\0")
        return self._buffer
