"""`CoCreateInstance` for a class this machine does not have: REGDB_E_CLASSNOTREG, and `*ppv` NULL.

Speakeasy answers S_OK for any class and writes an interface pointer only for the classes and
interfaces it models; for the others `*ppv` keeps whatever the program's variable held (often an
uninitialised stack slot), and the program's next call through it faults.  Windows, asked for a class
that is not registered, fails with REGDB_E_CLASSNOTREG and sets `*ppv` to NULL; asked for an interface
the class does not have, E_NOINTERFACE.  The classes and interfaces Speakeasy models get its own
handler's answer (ole32's, also for a program that imports the function from combase).
"""

from __future__ import annotations

import speakeasy.winenv.defs.windows.com as se_com

REGDB_E_CLASSNOTREG = 0x80040154
E_NOINTERFACE = 0x80004002
_GUID_SIZE = 16


def create(se, ptr: int, argv: list) -> int:
    """CoCreateInstance(rclsid, pUnkOuter, dwClsContext, riid, ppv)."""
    emu = se.emu
    rclsid, _outer, _context, riid, ppv = (list(argv) + [0] * 5)[:5]
    clsid = se_com.get_clsid(se_com.convert_guid_bytes_to_str(bytes(emu.mem_read(rclsid, _GUID_SIZE))))
    iid = se_com.get_iid(se_com.convert_guid_bytes_to_str(bytes(emu.mem_read(riid, _GUID_SIZE))))
    if clsid and iid:
        return emu.api.load_api_handler("ole32").CoCreateInstance(emu, argv, {})
    if clsid:
        argv[0] = clsid  # as Speakeasy's handler records a class it knows, in place of the pointer
    if ppv:
        emu.mem_write(ppv, bytes(ptr))
    return E_NOINTERFACE if clsid else REGDB_E_CLASSNOTREG
