"""Guard pages (`PAGE_GUARD`): the first touch raises STATUS_GUARD_PAGE_VIOLATION and lifts the guard.

Speakeasy applies `VirtualProtect(..., PAGE_EXECUTE_READ | PAGE_GUARD, ...)` as plain
`PAGE_EXECUTE_READ`, so a touch raises nothing.  A known anti-debugging check writes a `ret` to a page,
guards it and calls it: on Windows the call raises the exception, the program's handler takes it and
the program goes on; under a debugger or an emulator that ignores the guard, the `ret` simply runs and
the program concludes it is being watched and exits.

Here a page given `PAGE_GUARD` (by `VirtualProtect[Ex]` or `VirtualAlloc[Ex]`) is made inaccessible on
the engine, its protection kept aside.  The first read, write or fetch there faults; the page gets its
protection back (the guard is one-shot, as on Windows) and the exception goes to the program's handlers:
Speakeasy's SEH dispatch on x86, the unwind-table dispatcher on amd64 (`seh64.py`).  As for the
tracer's access violations, a faulting read or write has completed when the handler runs (unicorn
retries the access when the hook returns), where Windows would have the handler run first; a fetch
runs nothing before the handler.  With no handler on x86 the program goes on; on amd64 the run ends,
as the process would.  A later `VirtualProtect` without the flag (or `VirtualFree`) drops the guard.
"""

from __future__ import annotations

import contextlib

from speakeasy.winenv import arch as se_arch
from unicorn import UC_MEM_FETCH_PROT, UC_MEM_READ_PROT, UC_MEM_WRITE_PROT, UC_PROT_NONE

STDCALL = se_arch.CALL_CONV_STDCALL
PAGE_GUARD = 0x100
STATUS_GUARD_PAGE_VIOLATION = 0x80000001
_PAGE = 0x1000
_ACCESS = {UC_MEM_READ_PROT: 0, UC_MEM_WRITE_PROT: 1, UC_MEM_FETCH_PROT: 8}


class GuardPages:
    def __init__(self, emu, seh64=None) -> None:
        self.emu, self.seh64 = emu, seh64
        self.uc = emu.emu_eng.emu
        self.pages: dict[int, int] = {}  # guarded page -> its unicorn protection once the guard lifts

    # -- the APIs ----------------------------------------------------------------------------------------

    def protect(self, address: int, size: int, protection: int) -> None:
        """After a successful VirtualProtect/VirtualAlloc of [address, address + size)."""
        first = address & ~(_PAGE - 1)
        last = (address + max(size, 1) + _PAGE - 1) & ~(_PAGE - 1)
        for page in range(first, last, _PAGE):
            self.pages.pop(page, None)
            if protection & PAGE_GUARD:
                perms = self._perms(page)
                if perms is not None:
                    self.pages[page] = perms
                    self.uc.mem_protect(page, _PAGE, UC_PROT_NONE)

    def free(self, address: int) -> None:
        for page in [p for p in self.pages if address <= p]:
            if self.emu.get_address_map(page) is None:
                del self.pages[page]

    def _perms(self, page: int) -> int | None:
        for begin, end, perms in self.uc.mem_regions():
            if begin <= page <= end:
                return perms
        return None

    def hooks(self) -> list[tuple[str, int, object]]:
        """(kernel32 API name, argc, hook(emu, api_name, orig, argv))."""

        def virtual_protect(index: int):
            def hook(emu, api_name, orig, argv):
                args = list(argv)  # (Speakeasy's handler replaces some with their names, for its log)
                result = orig(argv)
                if result:
                    with contextlib.suppress(Exception):  # the API's result stands
                        self.protect(args[index], args[index + 1], args[index + 2])
                return result

            return hook

        def virtual_alloc(index: int):
            def hook(emu, api_name, orig, argv):
                args = list(argv)  # (Speakeasy's handler replaces some with their names, for its log)
                result = orig(argv)
                if result and args[index + 3] & PAGE_GUARD:
                    with contextlib.suppress(Exception):
                        self.protect(result, args[index + 1], args[index + 3])
                return result

            return hook

        def virtual_free(emu, api_name, orig, argv):
            args = list(argv)
            result = orig(argv)
            if result:
                with contextlib.suppress(Exception):
                    self.free(args[0])
            return result

        return [
            ("VirtualProtect", 4, virtual_protect(0)),
            ("VirtualProtectEx", 5, virtual_protect(1)),
            ("VirtualAlloc", 4, virtual_alloc(0)),
            ("VirtualAllocEx", 5, virtual_alloc(1)),
            ("VirtualFree", 3, virtual_free),
        ]

    # -- the fault ---------------------------------------------------------------------------------------

    def install(self, se) -> None:
        """Register the API hooks and take protection faults on guarded pages before Speakeasy does."""
        for name, argc, hook in self.hooks():
            for module in ("kernel32", "kernelbase"):
                se.add_api_hook(hook, module=module, api_name=name, argc=argc, call_conv=STDCALL)
        emu, unmapped = self.emu, self.emu._hook_mem_unmapped

        def mem_unmapped(emu_, access, address, size, value, ctx):
            if access in _ACCESS and self.touch(address, _ACCESS[access]):
                return True
            return unmapped(emu_, access, address, size, value, ctx)

        emu._hook_mem_unmapped = mem_unmapped

    def touch(self, address: int, access: int) -> bool:
        """A protection fault at `address`: True when it was a guard page's first touch (handled)."""
        page = address & ~(_PAGE - 1)
        perms = self.pages.pop(page, None)
        if perms is None:
            return False
        self.uc.mem_protect(page, _PAGE, perms)
        if self.seh64 is not None:
            return self.seh64.guard_page_violation(address, access)
        if self.emu.dispatch_handlers:
            self.emu.dispatch_seh(STATUS_GUARD_PAGE_VIOLATION, address)
        return True
