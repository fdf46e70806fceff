"""A stand-in for ATL's registrar: `AtlCreateRegistrar` in atl80 ... atl110 and the `IRegistrar` it makes.

A COM DLL's `DllRegisterServer` hands its registry script (an `.rgs` text resource) to ATL's registrar,
which parses it and writes the keys.  Wine's COM DLLs (about 170 of them in Debian's libwine) do it in
winecrt0's `__wine_register_resources`: for each "WINE_REGISTRY" resource, `LoadLibraryW("atl100.dll")`,
`GetProcAddress(.., "AtlCreateRegistrar")`, create the registrar, `AddReplacement("MODULE", path)` and
`StringRegister(script)` through the object's vtable, `Release` at the end.  The emulator has no
atl100.dll: the load failed and registration stopped at its first step, so the DLL's own code after it
(the rest of the callback, the next resources, the unregistration path) never ran.

Here those DLLs load as decoys, `AtlCreateRegistrar` gives a registrar object, and each `IRegistrar`
method answers as ATL's does on a well-formed script: `S_OK` (the script itself is not applied to the
emulated registry; its effect is ATL's, not the program's).  The methods are addresses the emulator
dispatches like any API (`atl100.IRegistrar_StringRegister` in a trace).
"""

from __future__ import annotations

import ntpath
import uuid

from speakeasy.winenv import arch as se_arch

STDCALL = se_arch.CALL_CONV_STDCALL
DLLS = ("atl80", "atl90", "atl100", "atl110")  # the releases that export AtlCreateRegistrar
S_OK, E_NOINTERFACE, E_POINTER, E_FAIL = 0, 0x80004002, 0x80004003, 0x80004005
IID_IUNKNOWN = uuid.UUID("00000000-0000-0000-c000-000000000046").bytes_le
IID_IREGISTRAR = uuid.UUID("44ec053b-400f-11d0-9dcd-00a0c90391d3").bytes_le
# IRegistrar's vtable (atliface.idl): IUnknown's three, then the registrar's own; the number of
# arguments counts `this` (x86 stdcall: the method pops them).
METHODS = (
    ("QueryInterface", 3), ("AddRef", 1), ("Release", 1), ("AddReplacement", 3),
    ("ClearReplacements", 1), ("ResourceRegisterSz", 4), ("ResourceUnregisterSz", 4),
    ("FileRegister", 2), ("FileUnregister", 2), ("StringRegister", 2), ("StringUnregister", 2),
    ("ResourceRegister", 4), ("ResourceUnregister", 4),
)  # fmt: skip


class Registrar:
    """One registrar object per emulation (ATL makes a new one per call; one object is all a caller can
    tell apart from that, as it never compares them), its vtable filled on first use."""

    def __init__(self, se, ptr: int) -> None:
        self.se, self.ptr = se, ptr
        self._object = 0

    def create(self, api_name: str, argv: list) -> int:
        """AtlCreateRegistrar(IRegistrar **out)."""
        if not argv[0]:
            return E_POINTER
        self.se.mem_write(argv[0], self._instance(api_name.split(".", 1)[0]).to_bytes(self.ptr, "little"))
        return S_OK

    def query_interface(self, argv: list) -> int:
        this, iid, out = argv[:3]
        if not out:
            return E_POINTER
        known = bytes(self.se.mem_read(iid, 16)) in (IID_IUNKNOWN, IID_IREGISTRAR) if iid else False
        self.se.mem_write(out, (this if known else 0).to_bytes(self.ptr, "little"))
        return S_OK if known else E_NOINTERFACE

    def _instance(self, dll: str) -> int:
        if not self._object:
            emu, ptr = self.se.emu, self.ptr
            table = b"".join(
                emu.get_proc(dll, f"IRegistrar_{name}").to_bytes(ptr, "little") for name, _ in METHODS
            )
            # The object is its vtable pointer; the table follows it.
            self._object = self.se.mem_alloc(ptr + len(table), tag="runtrace.atl.registrar")
            self.se.mem_write(self._object, (self._object + ptr).to_bytes(ptr, "little") + table)
        return self._object


def _load_stand_in_dlls(emu) -> None:
    """LoadLibrary of an ATL release gives a decoy module (Speakeasy makes one for any name when its
    `modules_always_exist` is set; here only for these names), so GetProcAddress on it works."""
    load = emu.load_library

    def load_library(mod_name):
        wanted = ntpath.basename(mod_name).lower().rsplit(".", 1)[0] in DLLS
        saved = emu.modules_always_exist
        emu.modules_always_exist = saved or wanted
        try:
            return load(mod_name)
        finally:
            emu.modules_always_exist = saved

    emu.load_library = load_library


def _guarded(fn):
    """A method whose failure (an unreadable argument) returns E_FAIL instead of ending the run."""

    def call(argv: list) -> int:
        try:
            return fn(argv)
        except Exception:
            return E_FAIL

    return call


def install(se, ptr: int) -> None:
    """Register the stand-in on a Speakeasy instance (before the run)."""
    _load_stand_in_dlls(se.emu)
    registrar = Registrar(se, ptr)
    handlers = {
        "QueryInterface": registrar.query_interface,
        "AddRef": lambda argv: 1,  # the reference count after the call; the object is never freed
        "Release": lambda argv: 1,
    }
    for dll in DLLS:
        se.add_api_hook(
            lambda emu, api_name, func, argv: _guarded(lambda a: registrar.create(api_name, a))(argv),
            module=dll,
            api_name="AtlCreateRegistrar",
            argc=1,
            call_conv=STDCALL,
        )
        for name, argc in METHODS:
            fn = _guarded(handlers.get(name, lambda argv: S_OK))
            se.add_api_hook(
                lambda emu, api_name, func, argv, fn=fn: fn(argv),
                module=dll,
                api_name=f"IRegistrar_{name}",
                argc=argc,
                call_conv=STDCALL,
            )
