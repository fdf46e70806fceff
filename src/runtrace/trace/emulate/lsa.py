"""The untrusted LSA connection of secur32.dll (sspicli.dll), which Speakeasy has no handlers for.

A program that asks the Local Security Authority about logon sessions or Kerberos tickets
(`LsaConnectUntrusted`, then `LsaLookupAuthenticationPackage` for the package's id) does so at start;
stubbed, these stdcall functions popped none of their arguments and on x86 the caller's stack was off
by 4 or 12 bytes from then on.  Here each pops the arguments ntsecapi.h declares and succeeds as for
an ordinary user: a connection handle, a package id per package name (MSV1_0 is 0, as on Windows;
the others in order of first lookup).  Calls into a package (`LsaCallAuthenticationPackage`) get
`STATUS_NO_SUCH_LOGON_SESSION`-like failure: there are no tickets or sessions to report.
"""

from __future__ import annotations

from collections.abc import Callable

STATUS_SUCCESS = 0
STATUS_NO_SUCH_PACKAGE = 0xC00000FE
STATUS_NO_SUCH_LOGON_SESSION = 0xC000005F
LSA_HANDLE = 0x15A00001
MSV1_0 = "MICROSOFT_AUTHENTICATION_PACKAGE_V1_0"


class Lsa:
    def __init__(self, ptr: int) -> None:
        self.ptr = ptr
        self.packages: dict[str, int] = {MSV1_0: 0}

    def _write(self, emu, address: int, value: int, size: int) -> None:
        if address:
            emu.mem_write(address, value.to_bytes(size, "little"))

    def connect(self, emu, argv: list) -> int:
        # (PHANDLE LsaHandle)
        self._write(emu, argv[0], LSA_HANDLE, self.ptr)
        return STATUS_SUCCESS

    def lookup_package(self, emu, argv: list) -> int:
        # (HANDLE LsaHandle, PLSA_STRING PackageName, PULONG AuthenticationPackage); LSA_STRING is
        # {USHORT Length; USHORT MaximumLength; PCHAR Buffer}, the buffer at offset 4 (x86) or 8 (amd64).
        _handle, name_at, out = argv[:3]
        if not name_at:
            return STATUS_NO_SUCH_PACKAGE
        length = int.from_bytes(bytes(emu.mem_read(name_at, 2)), "little")
        buffer = int.from_bytes(bytes(emu.mem_read(name_at + self.ptr, self.ptr)), "little")
        name = bytes(emu.mem_read(buffer, min(length, 256))).decode("latin-1") if buffer else ""
        package = self.packages.setdefault(name.upper(), len(self.packages))
        self._write(emu, out, package, 4)
        return STATUS_SUCCESS

    def call_package(self, emu, argv: list) -> int:
        # (LsaHandle, AuthenticationPackage, ProtocolSubmitBuffer, SubmitBufferLength,
        #  PVOID *ProtocolReturnBuffer, PULONG ReturnBufferLength, PNTSTATUS ProtocolStatus)
        self._write(emu, argv[4], 0, self.ptr)
        self._write(emu, argv[5], 0, 4)
        self._write(emu, argv[6], STATUS_NO_SUCH_LOGON_SESSION, 4)
        return STATUS_SUCCESS

    def handlers(self) -> dict[tuple[str, str], tuple[int, Callable]]:
        """(module, name) -> (stdcall argc, handler(emu, argv))."""
        table = {
            "LsaConnectUntrusted": (1, self.connect),
            "LsaLookupAuthenticationPackage": (3, self.lookup_package),
            "LsaCallAuthenticationPackage": (7, self.call_package),
            "LsaDeregisterLogonProcess": (1, lambda emu, a: STATUS_SUCCESS),
            "LsaFreeReturnBuffer": (1, lambda emu, a: STATUS_SUCCESS),
        }
        return {(dll, name): entry for dll in ("secur32", "sspicli") for name, entry in table.items()}
