"""`SHGetSpecialFolderLocation` and `SHGetPathFromIDList`: a shell folder as an item ID list (PIDL), and
the file-system path back from one.

Older programs find a special folder in two steps: the folder's PIDL, then its path (the pair that
predates `SHGetSpecialFolderPath`).  Both were stubs: the PIDL pointer was left unwritten and the path
buffer empty, and a program that builds its install path under the folder gave up at once (tracer
revision 22: the runs stopped within 20 calls of their start).

A PIDL is an opaque list of `SHITEMID {USHORT cb; BYTE abID[cb - 2]}` ended by a zero `cb`; only the
shell reads the item bytes.  Here a folder's list holds one item carrying the folder's path (the path
`SHGetSpecialFolderPath` and `SHGetFolderPath` give, `missingapi.MissingApis.csidl_path`), so a copy
of the list reads back the same path.  As on Windows, the desktop (CSIDL_DESKTOP) is the empty list,
whose path is the desktop folder, and virtual folders (My Computer, Control Panel, the Recycle Bin...)
have a PIDL but no path: `SHGetPathFromIDList` returns FALSE for them and for any list it did not make.
The block is the program's to free (`ILFree`, `CoTaskMemFree`, the shell's IMalloc).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

STDCALL = se_arch.CALL_CONV_STDCALL
S_OK, E_INVALIDARG = 0, 0x80070057
MAX_PATH = 260
CSIDL_DESKTOP = 0
# Folders of the shell namespace that are not file-system folders: INTERNET, CONTROLS, PRINTERS,
# BITBUCKET, DRIVES, NETWORK, CONNECTIONS, COMPUTERSNEARME.
VIRTUAL = frozenset({0x01, 0x03, 0x04, 0x0A, 0x11, 0x12, 0x31, 0x3D})
_TAG = b"RTFS"  # marks an item made here (a file-system folder's path follows, UTF-16, NUL-ended)
_VIRTUAL_TAG = b"RTVF"  # an item for a virtual folder (its CSIDL follows)


def folder_pidl(csidl: int, path: str) -> bytes:
    """The item ID list of a folder: empty for the desktop, one item otherwise; ends in a zero cb."""
    csidl &= 0xFF
    if csidl == CSIDL_DESKTOP:
        return b"\0\0"
    body = _VIRTUAL_TAG + bytes([csidl]) if csidl in VIRTUAL else _TAG + (path + "\0").encode("utf-16-le")
    return struct.pack("<H", len(body) + 2) + body + b"\0\0"


def pidl_path(first_item: bytes, desktop: str) -> str | None:
    """The path of a list from its first item's bytes (cb first), None where it has no path."""
    (cb,) = struct.unpack_from("<H", first_item)
    if cb == 0:
        return desktop
    body = first_item[2:cb]
    if not body.startswith(_TAG):
        return None
    return body[len(_TAG) :].decode("utf-16-le", "replace").split("\0", 1)[0]


class ShellPidls:
    def __init__(self, se, ptr: int, csidl_path: Callable[[int], str]) -> None:
        self.se, self.ptr, self.csidl_path = se, ptr, csidl_path

    @property
    def emu(self):
        return self.se.emu

    def simple(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers for APIs Speakeasy has none of: (modules, name, argc, convention, fn(argv))."""
        out = [(("shell32",), "SHGetSpecialFolderLocation", 3, STDCALL, self.special_folder_location)]
        for suffix, wide in (("A", False), ("W", True)):
            out.append(
                (("shell32",), "SHGetPathFromIDList" + suffix, 2, STDCALL, lambda a, w=wide: self.path(a, w))
            )
        return out

    def special_folder_location(self, argv: list) -> int:
        """SHGetSpecialFolderLocation(hwnd, csidl, PIDLIST_ABSOLUTE *ppidl): S_OK and a new list."""
        _hwnd, csidl, out = argv[:3]
        if not out:
            return E_INVALIDARG
        pidl = folder_pidl(csidl, self.csidl_path(csidl))
        block = self.se.mem_alloc(len(pidl), tag="api.SHGetSpecialFolderLocation")
        self.se.mem_write(block, pidl)
        self.se.mem_write(out, block.to_bytes(self.ptr, "little"))
        return S_OK

    def path(self, argv: list, wide: bool) -> int:
        """SHGetPathFromIDList(pidl, pszPath): TRUE and the path for a file-system folder; FALSE and an
        empty string otherwise."""
        pidl, out = argv[:2]
        path = None
        if pidl:
            (cb,) = struct.unpack("<H", bytes(self.emu.mem_read(pidl, 2)))
            path = pidl_path(bytes(self.emu.mem_read(pidl, max(cb, 2))), self.csidl_path(CSIDL_DESKTOP))
        text = (path or "")[: MAX_PATH - 1]
        if out:
            data = text.encode("utf-16-le") + b"\0\0" if wide else text.encode("latin-1", "replace") + b"\0"
            self.emu.mem_write(out, data)
        argv[1] = text
        return 1 if path is not None else 0
