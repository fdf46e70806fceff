"""amd64 unwind data (`.pdata` / `.xdata`): a pc's function entry and the unwinding of one frame.

What Windows' `RtlLookupFunctionEntry` and `RtlVirtualUnwind` do, read from the emulated memory
(Speakeasy does not parse the exception directory, and runtrace's lean image loading skips it):

- a function table is an array of RUNTIME_FUNCTION entries {BeginAddress, EndAddress, UnwindData}
  (RVAs from the image base), sorted by address; an image's is its exception data directory, code
  generated at run time registers its own (`RtlAddFunctionTable`);
- an entry's UNWIND_INFO holds the prolog's operations as unwind codes, in the reverse order of the
  prolog, the frame register, and either the language handler with its data (flags EHANDLER /
  UHANDLER) or a chained entry whose codes apply too (CHAININFO);
- unwinding a frame undoes the prolog operations that ran (all of them past the prolog, only those
  at or before the pc inside it), or, when the pc is in an epilog, carries out the rest of the
  epilog; then it pops the return address.  A pc without an entry is a leaf function: the return
  address is at [rsp].

The register state is a CONTEXT structure (`Context`), the bytes Windows passes to exception
handlers, so what the unwinder changes is what a handler sees.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

CONTEXT_SIZE = 0x4D0
CONTEXT_FULL = 0x10001F  # CONTEXT_AMD64 | control, integer, segments, floating point, debug registers
_GPR0, _RIP, _EFLAGS, _MXCSR, _FLAGS, _XMM0, _FLT_MXCSR = 0x78, 0xF8, 0x44, 0x34, 0x30, 0x1A0, 0x118
_SEGMENTS = 0x38  # cs, ds, es, fs, gs, ss: six 16-bit fields
RSP = (
    4  # register numbers are the unwind codes' (and CONTEXT's order): rax rcx rdx rbx rsp rbp rsi rdi r8..r15
)

UNW_FLAG_EHANDLER, UNW_FLAG_UHANDLER, UNW_FLAG_CHAININFO = 1, 2, 4
(UWOP_PUSH_NONVOL, UWOP_ALLOC_LARGE, UWOP_ALLOC_SMALL, UWOP_SET_FPREG, UWOP_SAVE_NONVOL,
 UWOP_SAVE_NONVOL_FAR, UWOP_EPILOG, UWOP_SPARE, UWOP_SAVE_XMM128, UWOP_SAVE_XMM128_FAR,
 UWOP_PUSH_MACHFRAME) = range(11)  # fmt: skip
_MAX_CHAIN = 32

Reader = Callable[[int, int], bytes]


class UnwindError(Exception):
    """Unwind data or a stack that cannot be read or makes no sense."""


class Context:
    """An amd64 CONTEXT record (0x4D0 bytes) and accessors for the registers the unwinder uses."""

    def __init__(self, data: bytes | bytearray | None = None) -> None:
        self.data = bytearray(data) if data is not None else bytearray(CONTEXT_SIZE)
        if len(self.data) != CONTEXT_SIZE:
            raise ValueError("a CONTEXT is 0x4D0 bytes")
        if data is None:
            struct.pack_into("<I", self.data, _FLAGS, CONTEXT_FULL)

    def reg(self, number: int) -> int:
        return struct.unpack_from("<Q", self.data, _GPR0 + 8 * number)[0]

    def set_reg(self, number: int, value: int) -> None:
        struct.pack_into("<Q", self.data, _GPR0 + 8 * number, value & 0xFFFFFFFFFFFFFFFF)

    @property
    def rip(self) -> int:
        return struct.unpack_from("<Q", self.data, _RIP)[0]

    @rip.setter
    def rip(self, value: int) -> None:
        struct.pack_into("<Q", self.data, _RIP, value & 0xFFFFFFFFFFFFFFFF)

    @property
    def rsp(self) -> int:
        return self.reg(RSP)

    @rsp.setter
    def rsp(self, value: int) -> None:
        self.set_reg(RSP, value)

    @property
    def eflags(self) -> int:
        return struct.unpack_from("<I", self.data, _EFLAGS)[0]

    @eflags.setter
    def eflags(self, value: int) -> None:
        struct.pack_into("<I", self.data, _EFLAGS, value & 0xFFFFFFFF)

    @property
    def mxcsr(self) -> int:
        return struct.unpack_from("<I", self.data, _MXCSR)[0]

    @mxcsr.setter
    def mxcsr(self, value: int) -> None:
        struct.pack_into("<I", self.data, _MXCSR, value)
        struct.pack_into("<I", self.data, _FLT_MXCSR, value)

    def segments(self) -> tuple[int, ...]:
        """cs, ds, es, fs, gs, ss."""
        return struct.unpack_from("<6H", self.data, _SEGMENTS)

    def set_segments(self, values: Iterable[int]) -> None:
        struct.pack_into("<6H", self.data, _SEGMENTS, *values)

    def xmm(self, number: int) -> bytes:
        return bytes(self.data[_XMM0 + 16 * number : _XMM0 + 16 * number + 16])

    def set_xmm(self, number: int, value: bytes) -> None:
        self.data[_XMM0 + 16 * number : _XMM0 + 16 * number + 16] = value

    def copy(self) -> Context:
        return Context(self.data)


@dataclass(frozen=True)
class FunctionEntry:
    """A RUNTIME_FUNCTION, with absolute addresses; `address` is where the entry itself lies."""

    address: int
    begin: int
    end: int
    unwind_info: int


class FunctionTables:
    """The function tables of the loaded images and of code registered at run time.

    `images()` gives (base, size) of every image that can hold code with unwind data (the program and
    the DLLs loaded from files; Speakeasy's decoy system DLLs have none).  An image's table is read
    from its headers in memory the first time a pc inside it is looked up.
    """

    def __init__(self, read: Reader, images: Callable[[], Iterable[tuple[int, int]]]) -> None:
        self._read = read
        self._images = images
        self._tables: dict[int, tuple[list[int], list[tuple[int, int, int, int]]]] = {}
        self._dynamic: dict[int, tuple[int, int, int]] = {}  # table address -> (base, start, end)

    def add_dynamic(self, table: int, count: int, base: int) -> None:
        """RtlAddFunctionTable: `count` entries at `table`, RVAs from `base`."""
        entries = _parse_entries(self._read(table, 12 * count), table, base) if count else []
        if entries:
            self._dynamic[table] = (base, entries[0][0], entries[-1][1])
            self._tables[-table] = ([e[0] for e in entries], entries)

    def remove_dynamic(self, table: int) -> bool:
        self._tables.pop(-table, None)
        return self._dynamic.pop(table, None) is not None

    def lookup(self, pc: int) -> tuple[int, FunctionEntry] | None:
        """(image base, entry) of the function containing pc, or None (a leaf function, or no unwind
        data there at all)."""
        for table, (base, start, end) in self._dynamic.items():
            if start <= pc < end:
                found = self._search(-table, base, pc)
                if found is not None:
                    return found
        for base, size in self._images():
            if base <= pc < base + size:
                if base not in self._tables:
                    self._tables[base] = self._image_table(base)
                return self._search(base, base, pc)
        return None

    def _search(self, key: int, base: int, pc: int) -> tuple[int, FunctionEntry] | None:
        begins, entries = self._tables[key]
        i = bisect.bisect_right(begins, pc) - 1
        if i < 0:
            return None
        begin, end, unwind, at = entries[i]
        if not begin <= pc < end:
            return None
        for _ in range(_MAX_CHAIN):
            if not unwind & 1:
                return base, FunctionEntry(at, begin, end, unwind)
            # An indirect entry: its UnwindData (bit 0 set) is the RVA of the entry that applies.
            at = unwind & ~1
            begin_rva, end_rva, unwind_rva = struct.unpack("<3I", self._read(at, 12))
            begin, end, unwind = base + begin_rva, base + end_rva, base + unwind_rva
        return None

    def _image_table(self, base: int) -> tuple[list[int], list[tuple[int, int, int, int]]]:
        try:
            nt = base + struct.unpack("<I", self._read(base + 0x3C, 4))[0]
            if self._read(nt, 4) != b"PE\0\0" or struct.unpack("<H", self._read(nt + 0x18, 2))[0] != 0x20B:
                return [], []
            rva, size = struct.unpack("<II", self._read(nt + 0x18 + 112 + 3 * 8, 8))
            if not rva or not size:
                return [], []
            entries = _parse_entries(self._read(base + rva, size - size % 12), base + rva, base)
        except Exception:  # unreadable headers or table: no unwind data
            return [], []
        entries.sort()
        return [e[0] for e in entries], entries


def _parse_entries(raw: bytes, at: int, base: int) -> list[tuple[int, int, int, int]]:
    """(begin, end, unwind info, address of the entry) for each RUNTIME_FUNCTION; the unwind info of
    an indirect entry keeps its bit 0 (`_search` follows it)."""
    out = []
    for i, (begin, end, unwind) in enumerate(struct.iter_unpack("<3I", raw)):
        if begin < end:
            out.append((base + begin, base + end, base + (unwind & ~1) | (unwind & 1), at + 12 * i))
    return out


@dataclass(frozen=True)
class UnwindInfo:
    version: int
    flags: int
    prolog_size: int
    codes: tuple[int, ...]  # the unwind code slots (16 bits each)
    frame_register: int
    frame_offset: int
    handler: int  # absolute address of the language handler, 0 when none
    handler_data: int  # absolute address of the data after the handler's RVA
    chained: FunctionEntry | None


def read_unwind_info(read: Reader, base: int, address: int) -> UnwindInfo:
    head = read(address, 4)
    version, flags = head[0] & 7, head[0] >> 3
    count, frame = head[2], head[3]
    if version not in (1, 2):
        raise UnwindError(f"unwind info version {version} at {address:#x}")
    codes = struct.unpack(f"<{count}H", read(address + 4, 2 * count)) if count else ()
    after = address + 4 + 2 * (count + (count & 1))
    handler = handler_data = 0
    chained = None
    if flags & UNW_FLAG_CHAININFO:
        begin, end, unwind = struct.unpack("<3I", read(after, 12))
        chained = FunctionEntry(after, base + begin, base + end, base + unwind)
    elif flags & (UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER):
        handler = base + struct.unpack("<I", read(after, 4))[0]
        handler_data = after + 4
    return UnwindInfo(version, flags, head[1], codes, frame & 0xF, frame >> 4, handler, handler_data, chained)


def _slots(op: int, info: int) -> int:
    if op in (UWOP_SAVE_NONVOL, UWOP_SAVE_XMM128, UWOP_EPILOG, UWOP_SPARE):
        return 2
    if op in (UWOP_SAVE_NONVOL_FAR, UWOP_SAVE_XMM128_FAR):
        return 3
    if op == UWOP_ALLOC_LARGE:
        return 2 if info == 0 else 3
    return 1


def virtual_unwind(
    read: Reader, handler_type: int, base: int, pc: int, entry: FunctionEntry, context: Context
) -> tuple[int, int, int]:
    """Unwind `context` (at `pc`, inside `entry`'s function) to its caller's.

    Returns (language handler, handler data, establisher frame); the handler is 0 unless the function
    has one of `handler_type` (UNW_FLAG_EHANDLER or UNW_FLAG_UHANDLER) and pc is past its prolog and
    not in an epilog, as Windows calls a handler only for a frame in the function's body."""
    info = read_unwind_info(read, base, entry.unwind_info)
    offset = pc - entry.begin
    frame = context.rsp
    if info.frame_register:
        set_at = _set_fpreg_offset(info)
        if offset >= info.prolog_size or (set_at is not None and set_at <= offset):
            frame = context.reg(info.frame_register) - 16 * info.frame_offset
    if offset >= info.prolog_size and _unwind_epilog(read, pc, info, context):
        return 0, 0, frame
    machine_frame = _apply_codes(read, info, offset if offset < info.prolog_size else None, frame, context)
    handler_info = info
    for _ in range(_MAX_CHAIN):
        if handler_info.chained is None:
            break
        handler_info = read_unwind_info(read, base, handler_info.chained.unwind_info)
        machine_frame |= _apply_codes(read, handler_info, None, frame, context)
    if not machine_frame:
        context.rip = _u64(read, context.rsp)
        context.rsp += 8
    handler = 0
    if offset >= info.prolog_size and handler_info.flags & handler_type:
        handler = handler_info.handler
    return handler, handler_info.handler_data if handler else 0, frame


def _set_fpreg_offset(info: UnwindInfo) -> int | None:
    i = 0
    while i < len(info.codes):
        op, opinfo = (info.codes[i] >> 8) & 0xF, info.codes[i] >> 12
        if op == UWOP_SET_FPREG:
            return info.codes[i] & 0xFF
        i += _slots(op, opinfo)
    return None


def _apply_codes(read: Reader, info: UnwindInfo, prolog_offset: int | None, frame: int, ctx: Context) -> bool:
    """Undo the prolog operations (only those at or before `prolog_offset` when it is given: the pc is
    inside the prolog); True when a machine frame was popped (the return address came with it)."""
    codes, i = info.codes, 0
    while i < len(codes):
        slot = codes[i]
        code_offset, op, opinfo = slot & 0xFF, (slot >> 8) & 0xF, slot >> 12
        n = _slots(op, opinfo)
        if i + n > len(codes):
            raise UnwindError("truncated unwind codes")
        if prolog_offset is not None and code_offset > prolog_offset or op == UWOP_EPILOG:
            i += n
            continue
        if op == UWOP_PUSH_NONVOL:
            ctx.set_reg(opinfo, _u64(read, ctx.rsp))
            ctx.rsp += 8
        elif op == UWOP_ALLOC_LARGE:
            ctx.rsp += codes[i + 1] * 8 if opinfo == 0 else codes[i + 1] | codes[i + 2] << 16
        elif op == UWOP_ALLOC_SMALL:
            ctx.rsp += opinfo * 8 + 8
        elif op == UWOP_SET_FPREG:
            ctx.rsp = ctx.reg(info.frame_register) - 16 * info.frame_offset
        elif op == UWOP_SAVE_NONVOL:
            ctx.set_reg(opinfo, _u64(read, frame + codes[i + 1] * 8))
        elif op == UWOP_SAVE_NONVOL_FAR:
            ctx.set_reg(opinfo, _u64(read, frame + (codes[i + 1] | codes[i + 2] << 16)))
        elif op == UWOP_SAVE_XMM128:
            ctx.set_xmm(opinfo, read(frame + codes[i + 1] * 16, 16))
        elif op == UWOP_SAVE_XMM128_FAR:
            ctx.set_xmm(opinfo, read(frame + (codes[i + 1] | codes[i + 2] << 16), 16))
        elif op == UWOP_PUSH_MACHFRAME:
            rsp = ctx.rsp + (8 if opinfo else 0)  # with an error code pushed after the frame
            ctx.rip = _u64(read, rsp)
            ctx.rsp = _u64(read, rsp + 24)
            return True
        i += n
    return False


# Epilogs have a fixed form (documented for the x64 calling convention): an optional `add rsp, n` or
# `lea rsp, [frame register + n]`, pops of 64-bit registers, then `ret` or a jump out of the function.
def _unwind_epilog(read: Reader, pc: int, info: UnwindInfo, ctx: Context) -> bool:
    """When pc is in an epilog, carry out the rest of it on `ctx` and return True."""
    try:
        code = read(pc, 64)
    except Exception:
        return False
    i, rsp = 0, ctx.rsp
    rex = code[0] if code[0] & 0xF0 == 0x40 else 0
    if rex & 0xF8 == 0x48 and code[1] == 0x83 and code[2] == 0xC4:  # add rsp, imm8
        rsp, i = rsp + struct.unpack_from("<b", code, 3)[0], 4
    elif rex & 0xF8 == 0x48 and code[1] == 0x81 and code[2] == 0xC4:  # add rsp, imm32
        rsp, i = rsp + struct.unpack_from("<i", code, 3)[0], 7
    elif rex & 0xFA == 0x48 and code[1] == 0x8D and info.frame_register:  # lea rsp, [reg + disp]
        modrm = code[2]
        reg_field, rm = (modrm >> 3) & 7, (modrm & 7) | ((rex & 1) << 3)
        if reg_field != 4 or rm != info.frame_register or rm & 7 == 4:
            return False
        base = ctx.reg(rm)
        if modrm >> 6 == 1:
            rsp, i = base + struct.unpack_from("<b", code, 3)[0], 4
        elif modrm >> 6 == 2:
            rsp, i = base + struct.unpack_from("<i", code, 3)[0], 7
        else:
            return False
    pops = []
    while i < len(code) - 2:
        prefix = code[i] if code[i] in (0x41, 0x48, 0x49) else 0
        op = code[i + (1 if prefix else 0)]
        if 0x58 <= op <= 0x5F:
            pops.append((op - 0x58) | (8 if prefix & 1 else 0))
            i += 2 if prefix else 1
            continue
        break
    prefix = 1 if code[i] in (0x48, 0xF3) else 0  # rex.w jmp, rep ret
    op = code[i + prefix]
    ends = op in (0xC3, 0xC2, 0xE9, 0xEB) or (op == 0xFF and code[i + prefix + 1] in (0x25,))
    if not ends:
        return False
    for reg in pops:
        ctx.set_reg(reg, _u64(read, rsp))
        rsp += 8
    ctx.rip = _u64(read, rsp)
    ctx.rsp = rsp + 8
    return True


def _u64(read: Reader, address: int) -> int:
    return struct.unpack("<Q", read(address, 8))[0]
