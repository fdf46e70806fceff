"""MFC 4.2's `CFile` (mfc42.dll, by ordinal) over Speakeasy's emulated file system.

Stubbed, `CFile::Open` returned FALSE ("cannot open"): droppers that load a resource and write it out
with a `CFile` gave up there, and the file they drop never appeared.  MFC's ordinals follow the
alphabetical order of the decorated names; each one here was checked against call sites in MFC
droppers (a stack `CFile` built with no arguments, `Open(name, modeCreate | modeWrite, NULL)` whose
result is tested, `Write(buffer, size)` with a locked resource and its size, then `Close()` and the
destructor): 354 `CFile()`, 5186 `Open(LPCTSTR, UINT, CFileException*)`, 6385 `Write(const void*,
UINT)`, 1979 `Close()`, 665 `~CFile()`.  All are `__thiscall`.

The object is MFC's `{vptr; UINT m_hFile; BOOL m_bCloseOnDelete; CString m_strFileName;}` (16 bytes);
`m_hFile` is `hFileNull` (-1) while closed, and the program may read it inline.  The vtable pointer is
left as the program's own constructor code set it (MFC's vtable lives in mfc42.dll, absent here).
"""

from __future__ import annotations

from collections.abc import Callable

from runtrace.trace.emulate.mfcstring import CStrings

_NULL_FILE = 0xFFFFFFFF  # hFileNull
_MODE_ACCESS = 3  # modeRead 0, modeWrite 1, modeReadWrite 2
_MODE_CREATE = 0x1000
_MODE_NO_TRUNCATE = 0x2000
_MAX_WRITE = 1 << 26


class CFiles:
    """mfc42.dll's `CFile` members for one x86 program; file names are kept as MFC's CStrings."""

    def __init__(self, strings: CStrings) -> None:
        self.strings = strings

    @property
    def emu(self):
        return self.strings.emu

    def handlers(self) -> dict[tuple[str, str], tuple[int, Callable]]:
        members = {
            354: (0, lambda a: self.construct()),
            5186: (3, lambda a: self.open(a[0], a[1])),
            6385: (2, lambda a: self.write(a[0], a[1])),
            1979: (0, lambda a: self.close()),
            665: (0, lambda a: self.destroy()),
        }
        return {
            ("mfc42", f"ordinal_{n}"): (argc, lambda emu, argv, f=f: f(argv))
            for n, (argc, f) in members.items()
        }

    def construct(self) -> int:
        this = self.strings._this()
        self.strings._write_u32(this + 4, _NULL_FILE)
        self.strings._write_u32(this + 8, 0)
        self.strings._init(this + 12, None)
        return this

    def open(self, name: int, flags: int) -> int:
        """Open(name, flags, exception): TRUE when the file is open; a missing file without
        modeCreate, or an empty name, is FALSE."""
        this = self.strings._this()
        path = self.strings._text(name).decode("latin-1")
        fileman = self.emu.fileman
        if not path:
            return 0
        if flags & _MODE_CREATE:
            exists = self.emu.does_file_exist(path)
            keep = exists and flags & _MODE_NO_TRUNCATE
            handle = fileman.file_open(path, create=not keep)
        else:
            handle = fileman.file_open(path, create=False) if self.emu.does_file_exist(path) else None
        f = self.emu.file_get(handle) if handle else None
        if f is None:
            return 0
        if flags & _MODE_CREATE and not keep:
            f.remove_data()
        self.strings._write_u32(this + 4, handle)
        self.strings._write_u32(this + 8, 1)  # m_bCloseOnDelete
        self.strings._assign(this + 12, path.encode("latin-1"))
        return 1

    def write(self, buffer: int, count: int) -> int:
        f = self._file()
        if f is not None and count:
            f.add_data(bytes(self.emu.mem_read(buffer, min(count, _MAX_WRITE))))
        return 0

    def close(self) -> int:
        this = self.strings._this()
        self.strings._write_u32(this + 4, _NULL_FILE)
        self.strings._write_u32(this + 8, 0)
        self.strings._assign(this + 12, b"")
        return 0

    def destroy(self) -> int:
        this = self.strings._this()
        self.close()
        self.strings._release(self.strings._data(this + 12))
        return 0

    def _file(self):
        handle = self.strings._read_u32(self.strings._this() + 4)
        return self.emu.file_get(handle) if handle != _NULL_FILE else None
