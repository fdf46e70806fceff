"""A tiny helper for the amd64 test programs: machine code assembled by hand, byte by byte, with labels.

Each test writes its instructions as bytes with a comment (as the other synthetic programs do); this
only places them, remembers labels, and fills in the rel32 displacements of jumps, calls and
rip-relative operands once every address is known.  `unwind_info` and `runtime_function` write the
`.xdata` / `.pdata` structures a function's prolog and `__try` scopes need.
"""

from __future__ import annotations

import struct

UWOP_PUSH_NONVOL, UWOP_ALLOC_SMALL, UWOP_SET_FPREG = 0, 2, 3
UNW_FLAG_EHANDLER, UNW_FLAG_UHANDLER = 1, 2
RBP = 5


class Code:
    def __init__(self, base: int) -> None:
        self.base = base  # address of the first byte
        self.buf = bytearray()
        self.labels: dict[str, int] = {}
        self._fixups: list[tuple[int, str | int]] = []  # (offset of a rel32, label or absolute target)

    def label(self, name: str) -> None:
        self.labels[name] = len(self.buf)

    def emit(self, data: bytes) -> None:
        self.buf += data

    def rel32(self, opcode: bytes, target: str | int, after: bytes = b"") -> None:
        """`opcode` then a rel32 to `target` (a label or an absolute address), then `after` (an
        immediate that follows the displacement)."""
        self.buf += opcode
        self._fixups.append((len(self.buf), target, len(after)))
        self.buf += bytes(4) + after

    def align(self, n: int) -> None:
        self.buf += b"\xcc" * (-len(self.buf) % n)

    def address(self, label: str) -> int:
        return self.base + self.labels[label]

    def rva(self, label: str, image_base: int) -> int:
        return self.address(label) - image_base

    def assemble(self) -> bytes:
        out = bytearray(self.buf)
        for offset, target, tail in self._fixups:
            absolute = self.address(target) if isinstance(target, str) else target
            struct.pack_into("<i", out, offset, absolute - (self.base + offset + 4 + tail))
        return bytes(out)


def unwind_info(
    prolog_size: int,
    codes: list[tuple[int, int, int]],
    flags: int = 0,
    handler_rva: int = 0,
    handler_data: bytes = b"",
    frame_register: int = 0,
    frame_offset: int = 0,
) -> bytes:
    """UNWIND_INFO version 1: codes are (offset in prolog, operation, info), in unwind order (the
    last prolog operation first)."""
    slots = [offset | op << 8 | info << 12 for offset, op, info in codes]
    if len(slots) % 2:
        slots.append(0)
    head = struct.pack("<BBBB", 1 | flags << 3, prolog_size, len(codes), frame_register | frame_offset << 4)
    body = b"".join(struct.pack("<H", s) for s in slots)
    if flags & (UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER):
        body += struct.pack("<I", handler_rva) + handler_data
    return head + body


def scope_table(scopes: list[tuple[int, int, int, int]]) -> bytes:
    """`__C_specific_handler`'s data: (begin, end, filter or termination handler, jump target) RVAs;
    a jump target of 0 makes it a `__finally`, a filter of 1 an `__except(1)`."""
    return struct.pack("<I", len(scopes)) + b"".join(struct.pack("<4I", *s) for s in scopes)


def runtime_function(begin_rva: int, end_rva: int, unwind_rva: int) -> bytes:
    return struct.pack("<3I", begin_rva, end_rva, unwind_rva)
