"""`SetFilePointer`, `SetFilePointerEx` and `_llseek` moved as Windows moves a file's pointer.

Speakeasy's `SetFilePointer` took the distance as an unsigned number, so a move back (-22 from the end,
where a ZIP archive's directory record starts; -16 from the current position) went 4 GiB forward and the
next read found nothing; it ignored `lpDistanceToMoveHigh` (neither read nor written), let nothing
fail (a move before the start of the file must fail with ERROR_NEGATIVE_SEEK and leave the pointer
where it was), and on a file without contents answered None.  Its `_llseek` always moved from the
current position, whatever the origin; `SetFilePointerEx` had no handler at all (the stub wrote no new
position).  The file's contents stay Speakeasy's `File` object (a BytesIO); only the arithmetic and the
answers are Windows' here.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

STDCALL = se_arch.CALL_CONV_STDCALL
ERROR_SUCCESS, ERROR_INVALID_HANDLE, ERROR_INVALID_PARAMETER, ERROR_NEGATIVE_SEEK = 0, 6, 87, 131
INVALID_SET_FILE_POINTER = 0xFFFFFFFF  # also _llseek's HFILE_ERROR (-1)
_MOVE_METHODS = (io.SEEK_SET, io.SEEK_CUR, io.SEEK_END)  # FILE_BEGIN, FILE_CURRENT, FILE_END: 0, 1, 2


def signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class FilePointer:
    def __init__(self, se, ptr: int) -> None:
        self.se, self.ptr = se, ptr

    def overriding(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers that replace Speakeasy's own (modules, name, argc, convention, fn(argv))."""
        k32 = ("kernel32", "kernelbase")
        # LARGE_INTEGER is passed by value: two stack slots on x86, one register on amd64.
        ex_argc = 5 if self.ptr == 4 else 4
        return [
            (k32, "SetFilePointer", 4, STDCALL, self.set_file_pointer),
            (k32, "SetFilePointerEx", ex_argc, STDCALL, self.set_file_pointer_ex),
            (("kernel32",), "_llseek", 3, STDCALL, self.llseek),
        ]

    def move(self, handle: int, distance: int, method: int) -> int | None:
        """Move the pointer of `handle`'s file; the new position, or None (the last error set, the
        pointer unmoved) where Windows fails."""
        emu = self.se.emu
        f = emu.file_get(handle)
        if f is None:
            emu.set_last_error(ERROR_INVALID_HANDLE)
            return None
        if method not in _MOVE_METHODS:
            emu.set_last_error(ERROR_INVALID_PARAMETER)
            return None
        size = f.get_size()  # also loads a configured file's contents
        if f.data is None:  # an empty file: Speakeasy keeps no buffer, but its pointer still moves
            f.data = io.BytesIO()
        base = (0, f.data.tell(), size)[method]
        if base + distance < 0:
            emu.set_last_error(ERROR_NEGATIVE_SEEK)
            return None
        # Beyond the end is allowed: reads there give 0 bytes, as on Windows.
        f.data.seek(base + distance, io.SEEK_SET)
        emu.set_last_error(ERROR_SUCCESS)
        return base + distance

    def set_file_pointer(self, argv: list) -> int:
        handle, low, p_high, method = argv[:4]
        emu = self.se.emu
        if p_high:
            high = int.from_bytes(bytes(emu.mem_read(p_high, 4)), "little")
            distance = signed((high << 32) | (low & 0xFFFFFFFF), 64)
        else:
            distance = signed(low, 32)
        position = self.move(handle, distance, method)
        if position is None:
            return INVALID_SET_FILE_POINTER
        if p_high:
            emu.mem_write(p_high, (position >> 32).to_bytes(4, "little"))
        elif position > 0xFFFFFFFF:
            # Without the high half the new position must fit 32 bits, or the call fails (documented).
            emu.set_last_error(ERROR_INVALID_PARAMETER)
            return INVALID_SET_FILE_POINTER
        return position & 0xFFFFFFFF

    def set_file_pointer_ex(self, argv: list) -> int:
        if self.ptr == 4:
            handle, low, high, p_new, method = argv[:5]
            distance = signed((high << 32) | (low & 0xFFFFFFFF), 64)
        else:
            handle, distance, p_new, method = argv[:4]
            distance = signed(distance, 64)
        position = self.move(handle, distance, method)
        if position is None:
            return 0
        if p_new:
            self.se.emu.mem_write(p_new, position.to_bytes(8, "little"))
        return 1

    def llseek(self, argv: list) -> int:
        handle, offset, origin = argv[:3]
        position = self.move(handle, signed(offset, 32), origin)
        return INVALID_SET_FILE_POINTER if position is None else position & 0xFFFFFFFF
