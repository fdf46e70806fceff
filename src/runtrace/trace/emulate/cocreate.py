"""`CoCreateInstance` for a class this machine does not have: REGDB_E_CLASSNOTREG, and `*ppv` NULL.

Speakeasy answers S_OK for any class and writes an interface pointer only for the classes and
interfaces it models; for the others `*ppv` keeps whatever the program's variable held (often an
uninitialised stack slot), and the program's next call through it faults.  Windows, asked for a class
that is not registered, fails with REGDB_E_CLASSNOTREG and sets `*ppv` to NULL; asked for an interface
the class does not have, E_NOINTERFACE.  The classes Speakeasy models keep its answer.
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
    # Speakeasy's handler records the names it knows in place of the pointers; so does this one.
    if clsid:
        argv[0] = clsid
        if iid:
            argv[3] = iid
    if clsid and iid:
        interface = emu.com.get_interface(emu, ptr, iid.replace("IID_", ""))
        if ppv:
            holder = emu.mem_map(ptr, tag=f"emu.COM.pv_{iid}")
            emu.mem_write(holder, interface.address.to_bytes(ptr, "little"))
            emu.mem_write(ppv, holder.to_bytes(ptr, "little"))
        return 0
    if ppv:
        emu.mem_write(ppv, bytes(ptr))
    return E_NOINTERFACE if clsid else REGDB_E_CLASSNOTREG
