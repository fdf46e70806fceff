"""Windows APIs whose generic stub (0, nothing written) malware of the corpus met before its run ended
early (tracer revision 22).

Counted over the corpus: among malware runs that ended with fewer than 1,000 API calls,
`KERNEL32.SetFileAttributesA` was stubbed in 33 runs and `USERENV.GetUserProfileDirectoryA` in 15.  A
program that hides the copy of itself it just made (`SetFileAttributes(path, HIDDEN | SYSTEM)`) read the
stub's 0 as failure; one building a path under the user's profile got FALSE and an empty buffer.  (The C
runtime functions of the same count, `mbstowcs`, `rename` and `_strnicmp`, are `crtfuncs.py`'s.)

Each answers from what the run has: Speakeasy's emulated files (`filedata.py`), and the profile the
machine's registry names (`registry.PROFILE`).
"""

from __future__ import annotations

from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate import filedata, registry
from runtrace.trace.emulate.apigroup import ApiGroup

STDCALL = se_arch.CALL_CONV_STDCALL
ERROR_FILE_NOT_FOUND = 2
ERROR_INVALID_PARAMETER = 87
ERROR_INSUFFICIENT_BUFFER = 122


class StubbedApis(ApiGroup):
    def simple(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers for APIs Speakeasy has none of: (modules, name, argc, convention, fn(argv))."""
        # FlatSB_SetScrollProp(hwnd, index, value, redraw): FALSE for a window InitializeFlatSB has not
        # given flat scroll bars (none here: InitializeFlatSB has no handler and fails).  Delphi's VCL
        # calls it for every scrolling form; the stub's FALSE was right, but the API is missing from
        # MinGW's comctl32 import library (`stdcallargs`), so the stub popped none of its 16 bytes
        # and the form's code returned through the wrong stack slot, ending the run (revision 22).
        out = [(("comctl32",), "FlatSB_SetScrollProp", 4, STDCALL, lambda a: 0)]
        for suffix, wide in (("A", False), ("W", True)):
            out += [
                (
                    ("kernel32", "kernelbase"),
                    "SetFileAttributes" + suffix,
                    2,
                    STDCALL,
                    lambda a, wide=wide: self.set_file_attributes(a, wide),
                ),
                (
                    ("userenv",),
                    "GetUserProfileDirectory" + suffix,
                    3,
                    STDCALL,
                    lambda a, wide=wide: self.user_profile_directory(a, wide),
                ),
            ]
        return out

    # -- handlers --------------------------------------------------------------------------------------

    def set_file_attributes(self, argv: list, wide: bool) -> int:
        """SetFileAttributes(path, attributes): TRUE for a file or folder the run has (the emulated file
        system keeps no attributes, so there is nothing to store), else ERROR_FILE_NOT_FOUND."""
        path = self._string(argv[0], wide)
        argv[0] = path
        if filedata.exists(self.emu, path):
            return 1
        self.emu.set_last_error(ERROR_FILE_NOT_FOUND)
        return 0

    def user_profile_directory(self, argv: list, wide: bool) -> int:
        """GetUserProfileDirectory(hToken, lpProfileDir, lpcchSize): the profile in the caller's width;
        a missing or short buffer gets the size needed (characters, with the NUL) and
        ERROR_INSUFFICIENT_BUFFER, as Windows answers a size query."""
        _token, buffer, size_at = argv[:3]
        if not size_at:
            self.emu.set_last_error(ERROR_INVALID_PARAMETER)
            return 0
        needed = len(registry.PROFILE) + 1
        size = int.from_bytes(bytes(self.emu.mem_read(size_at, 4)), "little")
        self.emu.mem_write(size_at, needed.to_bytes(4, "little"))
        if not buffer or size < needed:
            self.emu.set_last_error(ERROR_INSUFFICIENT_BUFFER)
            return 0
        encoded = registry.PROFILE.encode("utf-16-le" if wide else "latin-1")
        self.emu.mem_write(buffer, encoded + (b"\0\0" if wide else b"\0"))
        argv[1] = registry.PROFILE
        return 1

    # -- helpers ---------------------------------------------------------------------------------------

    def _string(self, address: int, wide: bool) -> str:
        return self.emu.read_mem_string(address, 2 if wide else 1) if address else ""
