"""APIs with a plain right answer that Speakeasy has no handler for, met by malware runs that ended
with fewer than 1,000 API calls at tracer revision 24's start (its probe of the era corpus's malware).

The generic stub answers 0 and writes nothing, which each of these programs read as failure where
Windows never fails: no semaphore (`CreateSemaphore`), no drives (`GetLogicalDriveStrings`, though
`GetLogicalDrives` lists C:), no thread owning a window, a service that cannot be deleted, no memory
from `CoTaskMemAlloc`, a BSTR that cannot grow.  Each answer is the one an ordinary Windows 10
desktop gives, with Speakeasy's objects behind it where there are some (its kernel objects, its drive
list, its process and thread ids, its heap).
"""

from __future__ import annotations

import string
from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate import allocations
from runtrace.trace.emulate.apigroup import ApiGroup

STDCALL = se_arch.CALL_CONV_STDCALL
CDECL = se_arch.CALL_CONV_CDECL
SERVICE_DATABASE_LOCK = 0x5C0C0001  # the SC_LOCK LockServiceDatabase hands out


class SimpleAnswers(ApiGroup):
    def simple(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers for APIs Speakeasy has none of: (modules, name, argc, convention, fn(argv))."""
        k32, advapi, ole32 = ("kernel32", "kernelbase"), ("advapi32", "sechost"), ("ole32", "combase")
        out = [
            (k32, "SetProcessPriorityBoost", 2, STDCALL, lambda a: 1),
            (("user32",), "GetWindowThreadProcessId", 2, STDCALL, self.window_thread_process_id),
            (("uxtheme",), "IsThemeActive", 0, STDCALL, lambda a: 1),  # Windows 10's visual styles are on
            (("uxtheme",), "IsAppThemed", 0, STDCALL, lambda a: 1),
            (
                advapi,
                "DeleteService",
                1,
                STDCALL,
                lambda a: 1,
            ),  # marked for deletion, as for a stopped service
            (advapi, "LockServiceDatabase", 1, STDCALL, lambda a: SERVICE_DATABASE_LOCK),
            (advapi, "UnlockServiceDatabase", 1, STDCALL, lambda a: 1),
            (ole32, "CoTaskMemAlloc", 1, STDCALL, lambda a: self._alloc(a[0])),
            (ole32, "CoTaskMemFree", 1, STDCALL, self.free),
            (ole32, "CoTaskMemRealloc", 2, STDCALL, self.co_task_mem_realloc),
            (("oleaut32",), "SysReAllocStringLen", 3, STDCALL, self.reallocate_bstr),
            (
                ("oleaut32",),
                "SysReAllocString",
                2,
                STDCALL,
                lambda a: self.reallocate_bstr([a[0], a[1], None]),
            ),
            # The VC++ 2005/2008 runtimes' pointer encoding: what matters is that decode undoes encode.
            (("msvcr80", "msvcr90"), "_encode_pointer", 1, CDECL, lambda a: a[0]),
            (("msvcr80", "msvcr90"), "_decode_pointer", 1, CDECL, lambda a: a[0]),
        ]
        for suffix, wide in (("A", False), ("W", True)):
            out += [
                (k32, "CreateSemaphore" + suffix, 4, STDCALL, lambda a, w=wide: self.semaphore(a[3], w)),
                (k32, "CreateSemaphoreEx" + suffix, 6, STDCALL, lambda a, w=wide: self.semaphore(a[3], w)),
                (
                    k32,
                    "GetLogicalDriveStrings" + suffix,
                    2,
                    STDCALL,
                    lambda a, w=wide: self.drive_strings(a, w),
                ),
            ]
        return out

    # -- handlers --------------------------------------------------------------------------------------

    def _alloc(self, size: int) -> int:
        return self.emu.heap_alloc(max(size & ((1 << (8 * self.ptr)) - 1), 1), heap="runtrace.cotaskmem")

    def free(self, argv: list) -> int:
        allocations.free(self.emu, argv[0])
        return 0

    def co_task_mem_realloc(self, argv: list) -> int:
        return allocations.reallocate(self.emu, argv[0], argv[1] & ((1 << (8 * self.ptr)) - 1), self._alloc)

    def semaphore(self, name_at: int, wide: bool) -> int:
        """A kernel object for the semaphore (its count is not kept: waits on objects succeed here)."""
        name = self.emu.read_mem_string(name_at, 2 if wide else 1) if name_at else ""
        handle, _ = self.emu.create_event(name)
        return handle

    def drive_strings(self, argv: list, wide: bool) -> int:
        """GetLogicalDriveStrings(size, buffer): "C:\\" and the other drives GetLogicalDrives lists, each
        NUL-terminated, then a NUL; the characters written without the last NUL, or the size needed."""
        size, buffer = argv[0] & 0xFFFFFFFF, argv[1]
        letters = [d for d in string.ascii_uppercase if d in self.emu.get_drive_manager().drive_letters]
        text = "".join(f"{letter}:\\\0" for letter in letters)
        if not buffer or size < len(text) + 1:
            return len(text) + 1
        self.emu.mem_write(buffer, (text + "\0").encode("utf-16-le" if wide else "latin-1"))
        return len(text)

    def window_thread_process_id(self, argv: list) -> int:
        """GetWindowThreadProcessId(hwnd, &pid): every window here is the program's own."""
        if argv[1]:
            pid = self.emu.get_current_process().get_id()
            self.emu.mem_write(argv[1], pid.to_bytes(4, "little"))
        return self.emu.get_current_thread().get_id()

    def reallocate_bstr(self, argv: list) -> int:
        """SysReAllocStringLen(BSTR *, text, length) (length None: SysReAllocString, to the NUL): a new
        BSTR of those characters in *BSTR, the old one freed; TRUE."""
        holder, text_at, length = argv[0], argv[1], argv[2]
        if not holder:
            return 0
        if length is None:
            text = self.emu.read_mem_string(text_at, 2) if text_at else ""
        else:
            length &= 0xFFFFFFFF
            text = (
                bytes(self.emu.mem_read(text_at, 2 * length)).decode("utf-16-le", "replace")
                if text_at
                else ""
            )
            text = text.ljust(length, "\0")
        data = text.encode("utf-16-le")
        block = self._alloc(4 + len(data) + 2)
        self.emu.mem_write(block, len(data).to_bytes(4, "little") + data + b"\0\0")
        old = int.from_bytes(bytes(self.emu.mem_read(holder, self.ptr)), "little")
        self.emu.mem_write(holder, (block + 4).to_bytes(self.ptr, "little"))
        if old:
            allocations.free(self.emu, old - 4)
        return 1
