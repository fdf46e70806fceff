"""What every group of API handlers holds: the Speakeasy instance it answers on and the pointer size."""

from __future__ import annotations


class ApiGroup:
    """A group of handlers on one emulator; `ptr` is 4 (x86) or 8 (amd64)."""

    def __init__(self, se, ptr: int) -> None:
        self.se, self.ptr = se, ptr

    @property
    def emu(self):
        return self.se.emu
