"""x64dbg's binary run trace (`.trace32` / `.trace64`): a streaming reader and a writer.

Layout (shared/docs/trace-formats.md, section 1): magic `TRAC`, a u32 length and that many bytes of
JSON (with "arch"), then one block per executed instruction until end of file:

    type u8 (0) | R u8 | M u8 | flags_opsize u8 | [thread id u32] | opcode (L bytes)
    | reg_pos R x u8 | reg_val R x ptr | mem_flags M x u8 | mem_addr M x ptr | mem_old M x ptr
    | mem_new (entries whose mem_flags bit 0 is clear) x ptr

The instruction address is the instruction-pointer slot of x64dbg's register dump (slot 16 on x64,
8 on x86), written only when it changed since the previous block, and in full dumps.

Reading is split in two so that a million instructions take about a second in pure Python:
`_scan_records` walks the variable-length blocks with nothing but byte indexing (the only part that
must be sequential), and `_RecordDecoder` extracts addresses, opcodes and thread ids of a whole chunk
at once with numpy before handing them to `BlockBuilder.add_stream`.  The file is read in chunks, so
memory does not grow with the file beyond the trace being built.
"""

from __future__ import annotations

import json
import ntpath
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from runtrace.trace.blocks import BlockBuilder
from runtrace.trace.disasm import decode_one, is_control_transfer
from runtrace.trace.errors import TraceReadError, at_byte
from runtrace.trace.formats.registry import TraceFormat, register
from runtrace.trace.model import Arch, StopReason, Trace, TraceMeta

MAGIC = b"TRAC"
SUFFIXES = (".trace32", ".trace64")
FULL_DUMP_EVERY = 512  # x64dbg writes every register at the start and every 512 instructions
# The format does not bound the JSON; x64dbg writes a path and a hash there (well under a kilobyte).
# A cap keeps a damaged length field from making the reader allocate gigabytes.
MAX_JSON_BYTES = 16 << 20
CHUNK_BYTES = 1 << 18
THREAD_BIT = 0x80

_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Layout:
    """What differs between .trace32 and .trace64."""

    arch: Arch
    name: str  # the JSON "arch" value
    ptr: int  # pointer size: register values, memory addresses and contents
    ip_slot: int  # register-dump slot of the instruction pointer
    dump_slots: int  # slots in a full register dump; no register index may reach this


LAYOUTS = {
    "x64": Layout(Arch.AMD64, "x64", 8, 16, 172),
    "x86": Layout(Arch.X86, "x86", 4, 8, 216),
}
LAYOUT_OF_ARCH = {layout.arch: layout for layout in LAYOUTS.values()}

# Size of a block's fixed part (header, optional thread id, opcode) for every flags_opsize value.
_FIXED_SIZE = [4 + (4 if f & THREAD_BIT else 0) + (f & 15) for f in range(256)]
# Maps a mem_flags byte to 1 when its memory entry has no "new" value (bit 0 set), else 0.
_NO_NEW_VALUE = bytes(b & 1 for b in range(256))
# _LOW_BYTES_MASK[k] keeps the low k bytes of a little-endian 64-bit word.
_LOW_BYTES_MASK = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)


# ---------------------------------------------------------------------------------------------------
# Reading


def read_header(fh: BinaryIO, path: str | Path) -> tuple[dict, Layout, int]:
    """Magic and JSON header; returns the JSON, the layout and the file offset of the first block."""
    head = fh.read(8)
    if head[:4] != MAGIC[: len(head)]:
        raise at_byte(path, 0, f"not an x64dbg trace: magic {head[:4]!r}, expected {MAGIC!r}")
    if len(head) < 4:
        raise at_byte(path, len(head), f"header cut off: {len(head)} bytes, the magic alone takes 4")
    if len(head) < 8:
        raise at_byte(path, len(head), "header cut off: the 4-byte JSON length is missing")
    (size,) = _U32.unpack_from(head, 4)
    if size > MAX_JSON_BYTES:
        raise at_byte(path, 4, f"JSON header length {size} is over the {MAX_JSON_BYTES}-byte limit")
    raw = fh.read(size)
    if len(raw) < size:
        raise at_byte(path, 8 + len(raw), f"JSON header cut off: {size} bytes announced, {len(raw)} present")
    try:
        info = json.loads(raw.rstrip(b"\0").decode("utf-8"))
    except UnicodeDecodeError as e:
        raise at_byte(path, 8 + e.start, "JSON header is not UTF-8") from None
    except json.JSONDecodeError as e:
        raise at_byte(path, 8 + e.pos, f"JSON header is not valid JSON ({e.msg})") from None
    if not isinstance(info, dict) or "arch" not in info:
        raise at_byte(path, 8, 'JSON header has no "arch" (expected "x64" or "x86")')
    arch = info["arch"]
    if not isinstance(arch, str) or arch not in LAYOUTS:
        raise at_byte(path, 8, f'JSON header "arch" is {arch!r}, expected "x64" or "x86"')
    return info, LAYOUTS[arch], 8 + size


def max_block_size(ptr: int) -> int:
    """The largest block the format allows: every count field at 255, every memory entry with a new value."""
    return 4 + 4 + 15 + 255 * (1 + ptr) + 255 * (1 + 3 * ptr)


def _scan_records(buf: bytes, ptr: int) -> tuple[list[int], int]:
    """Start offsets of the complete blocks at the front of buf, and where the first incomplete one starts.

    This loop is the one part of reading that cannot be vectorised (each block's size decides where
    the next one starts), so it only computes sizes; validation happens afterwards on whole arrays.
    Every block is at least 4 bytes long, so the loop always ends.
    """
    starts: list[int] = []
    append = starts.append
    fixed = _FIXED_SIZE
    no_new = _NO_NEW_VALUE
    reg_bytes = [r * (1 + ptr) for r in range(256)]  # reg_pos byte + value per register change
    mem_entry = 1 + 2 * ptr  # mem_flags byte + address + old value
    # Bytes of one memory entry by its mem_flags byte (a new value unless bit 0 is set); blocks
    # access memory at most once or twice, so those cases skip the general count below.
    mem_one = [mem_entry + (0 if f & 1 else ptr) for f in range(256)]
    end = len(buf)
    pos = 0
    # A block that starts this far from the end is complete whatever its fields say, so the hot loop
    # needs no bounds checks.
    safe_end = end - max_block_size(ptr)
    while pos < safe_end:
        append(pos)
        m = buf[pos + 2]
        nxt = pos + fixed[buf[pos + 3]] + reg_bytes[buf[pos + 1]]
        if m:
            if m == 1:
                nxt += mem_one[buf[nxt]]
            elif m == 2:
                nxt += mem_one[buf[nxt]] + mem_one[buf[nxt + 1]]
            else:
                nxt += m * mem_entry + (m - buf[nxt : nxt + m].translate(no_new).count(1)) * ptr
        pos = nxt
    while pos + 4 <= end:
        nxt = pos + fixed[buf[pos + 3]] + reg_bytes[buf[pos + 1]]
        m = buf[pos + 2]
        if m:
            if nxt + m > end:
                break
            nxt += m * mem_entry + (m - buf[nxt : nxt + m].translate(no_new).count(1)) * ptr
        if nxt > end:
            break
        append(pos)
        pos = nxt
    return starts, pos


class _TransferCache(dict):
    """opcode bytes -> is it a control transfer, decided exactly as BlockBuilder.add decides it."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def __missing__(self, opcode: bytes) -> bool:
        insn = decode_one(opcode, 0, self.bits)
        value = is_control_transfer(insn.mnemonic if insn else "(bad)")
        self[opcode] = value
        return value


class _TransferTable:
    """Classifies a chunk's instructions as control transfers or not, without a Python step per instruction.

    An opcode is keyed by a 64-bit hash of its two words (bytes, zero padding, length in the last
    byte); a sorted table of known opcodes answers whole arrays with searchsorted, and the row itself
    is compared so a hash collision can never give a wrong answer (colliding opcodes take the exact,
    per-instruction path).  A trace has a few thousand distinct opcodes, so nearly every lookup hits.
    """

    _K0 = np.uint64(0x9E3779B97F4A7C15)
    _K1 = np.uint64(0xC2B2AE3D27D4EB4F)

    def __init__(self, bits: int) -> None:
        self.exact = _TransferCache(bits)
        self.keys = np.zeros(0, dtype=np.uint64)
        self.w0 = np.zeros(0, dtype=np.uint64)
        self.w1 = np.zeros(0, dtype=np.uint64)
        self.flags = np.zeros(0, dtype=bool)

    def _find(self, h: np.ndarray, w0: np.ndarray, w1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(self.keys) == 0:
            return np.zeros(len(h), dtype=bool), np.zeros(len(h), dtype=bool)
        pos = np.searchsorted(self.keys, h)
        np.minimum(pos, len(self.keys) - 1, out=pos)
        hit = (self.keys[pos] == h) & (self.w0[pos] == w0) & (self.w1[pos] == w1)
        return hit, self.flags[pos] & hit

    def classify(self, w0: np.ndarray, w1: np.ndarray, data: bytes, offsets: list[int]) -> np.ndarray:
        h = (w0 * self._K0) ^ (w1 * self._K1)
        hit, flags = self._find(h, w0, w1)
        miss = np.flatnonzero(~hit)
        if len(miss) == 0:
            return flags
        new_keys, first = np.unique(h[miss], return_index=True)
        new_keys = new_keys.copy()
        reps = miss[first]
        fresh = ~np.isin(new_keys, self.keys)  # a known hash with another row is a collision: skip it
        reps, new_keys = reps[fresh], new_keys[fresh]
        exact = self.exact
        new_flags = np.array([exact[data[offsets[i] : offsets[i + 1]]] for i in reps.tolist()], dtype=bool)
        keys = np.concatenate((self.keys, new_keys))
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.w0 = np.concatenate((self.w0, w0[reps]))[order]
        self.w1 = np.concatenate((self.w1, w1[reps]))[order]
        self.flags = np.concatenate((self.flags, new_flags))[order]
        hit2, flags2 = self._find(h[miss], w0[miss], w1[miss])
        flags[miss] = flags2
        for i in miss[~hit2].tolist():
            flags[i] = exact[data[offsets[i] : offsets[i + 1]]]
        return flags


class _RecordDecoder:
    """Turns the blocks `_scan_records` found in one chunk into instructions for a BlockBuilder.

    Keeps what carries over from chunk to chunk: the last instruction pointer and thread id (blocks
    only hold them when they change).
    """

    def __init__(self, layout: Layout, builder: BlockBuilder) -> None:
        self.layout = layout
        self.builder = builder
        self.transfers = _TransferTable(layout.arch.bits)
        self.ip: int | None = None
        self.tid = 0
        self.instructions = 0

    def feed(self, buf: bytes, starts: list[int]) -> tuple[int, str] | None:
        """Add the chunk's valid blocks; returns (offset in buf, problem) of the first invalid one."""
        n = len(starts)
        if n == 0:
            return None
        lay = self.layout
        b = np.zeros(len(buf) + 16, dtype=np.uint8)  # padded: fixed-width reads may run past the end
        b[: len(buf)] = np.frombuffer(buf, dtype=np.uint8)
        u32, u64 = _unaligned(b, "<u4"), _unaligned(b, "<u8")
        s = np.asarray(starts, dtype=np.int64)
        kind = b[s]
        n_regs = b[s + 1].astype(np.int64)
        flags = b[s + 3]
        has_tid = (flags & THREAD_BIT) != 0
        # Bits 4-6 are never set by x64dbg: a block with them set has an opcode length over 15.  The
        # block's layout is still taken from bits 0-3, as _scan_records sized it, so every offset
        # below stays inside the block.
        opsize = (flags & 15).astype(np.int64)
        opcode_at = s + 4 + 4 * has_tid
        reg_pos_at = opcode_at + opsize

        problem = np.zeros(n, dtype=np.int8)  # 0: fine; otherwise an index into the messages below
        claimed_size = flags & 0x7F
        problem[(claimed_size == 0) | (claimed_size > 15)] = 2
        problem[kind != 0] = 1
        values = u64 if lay.ptr == 8 else u32
        ip, has_ip, past_dump = self._instruction_pointers(b, values, n_regs, reg_pos_at)
        problem[(problem == 0) & past_dump] = 3

        # Blocks without the IP slot ran at the same address as the block before (e.g. `rep movsb`).
        last = np.where(has_ip, np.arange(n), -1)
        np.maximum.accumulate(last, out=last)
        addresses = ip[np.maximum(last, 0)]
        if (last < 0).any():
            if self.ip is None:
                problem[(problem == 0) & (last < 0)] = 4
            else:
                addresses[last < 0] = self.ip

        tids = np.zeros(n, dtype=np.uint32)
        tids[has_tid] = u32[s[has_tid] + 4]
        last = np.where(has_tid, np.arange(n), -1)
        np.maximum.accumulate(last, out=last)
        tids = tids[np.maximum(last, 0)]
        tids[last < 0] = self.tid

        bad = np.flatnonzero(problem)
        valid = int(bad[0]) if len(bad) else n
        if valid:
            self._emit(b, u64, opcode_at[:valid], opsize[:valid], addresses[:valid], tids[:valid])
            self.ip, self.tid = int(addresses[valid - 1]), int(tids[valid - 1])
        if valid == n:
            return None
        i = valid
        messages = {
            1: f"block type {int(kind[i])} (only type 0 exists)",
            2: f"opcode length {int(claimed_size[i])} (must be 1 to 15)",
            3: f"register index past the {lay.dump_slots}-slot register dump",
            4: "first instruction has no instruction-pointer value",
        }
        return int(s[i]), messages[int(problem[i])]

    def _instruction_pointers(
        self, b: np.ndarray, values: np.ndarray, n_regs: np.ndarray, reg_pos_at: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per block: IP value (when written), whether written, whether a register index overflows."""
        n = len(n_regs)
        ip = np.zeros(n, dtype=np.uint64)
        has_ip = np.zeros(n, dtype=bool)
        past_dump = np.zeros(n, dtype=bool)
        # Blocks between dumps change a few registers; full dumps change them all.  Each kind has
        # its own vectorised walk (round by round for few entries, flattened for many).
        few = n_regs <= 8
        for blocks, walk in (
            (np.flatnonzero(few & (n_regs > 0)), self._walk_rounds),
            (np.flatnonzero(~few), self._walk_flat),
        ):
            if len(blocks):
                index_of_ip, last_index = walk(b, n_regs[blocks], reg_pos_at[blocks])
                past_dump[blocks] = last_index >= self.layout.dump_slots
                found = index_of_ip >= 0
                hits = blocks[found]
                value_at = reg_pos_at[hits] + n_regs[hits] + index_of_ip[found] * self.layout.ptr
                ip[hits] = values[value_at]
                has_ip[hits] = True
        return ip, has_ip, past_dump

    def _walk_rounds(self, b: np.ndarray, n_regs: np.ndarray, reg_pos_at: np.ndarray):
        """(entry number holding the IP slot or -1, absolute index of the last entry) per block."""
        entry_of_ip = np.full(len(n_regs), -1, dtype=np.int64)
        index = np.full(len(n_regs), -1, dtype=np.int64)
        for k in range(int(n_regs.max())):
            going = n_regs > k
            index[going] += b[reg_pos_at[going] + k].astype(np.int64) + 1
            entry_of_ip[going & (index == self.layout.ip_slot)] = k
        return entry_of_ip, index

    def _walk_flat(self, b: np.ndarray, n_regs: np.ndarray, reg_pos_at: np.ndarray):
        """Same as _walk_rounds with one flat array of all entries (absolute index = running sum)."""
        total = int(n_regs.sum())
        block_of = np.repeat(np.arange(len(n_regs)), n_regs)
        first_entry = np.cumsum(n_regs) - n_regs
        within = np.arange(total) - first_entry[block_of]
        steps = b[reg_pos_at[block_of] + within].astype(np.int64) + 1
        running = np.cumsum(steps)
        absolute = running - (running - steps)[first_entry][block_of] - 1
        entry_of_ip = np.full(len(n_regs), -1, dtype=np.int64)
        at_ip = absolute == self.layout.ip_slot
        entry_of_ip[block_of[at_ip]] = within[at_ip]
        return entry_of_ip, absolute[first_entry + n_regs - 1]

    def _emit(
        self,
        b: np.ndarray,
        u64: np.ndarray,
        opcode_at: np.ndarray,
        opsize: np.ndarray,
        addresses: np.ndarray,
        tids: np.ndarray,
    ) -> None:
        offsets = np.zeros(len(opsize) + 1, dtype=np.int64)
        np.cumsum(opsize, out=offsets[1:])
        data = b[np.repeat(opcode_at - offsets[:-1], opsize) + np.arange(int(offsets[-1]))].tobytes()
        # Each opcode as two little-endian words (zero padded, length in the top byte): the transfer
        # table's key.
        w0 = u64[opcode_at] & _LOW_BYTES_MASK[np.minimum(opsize, 8)]
        w1 = (u64[opcode_at + 8] & _LOW_BYTES_MASK[np.maximum(opsize - 8, 0)]) | (
            opsize.astype(np.uint64) << np.uint64(56)
        )
        transfers = self.transfers.classify(w0, w1, data, offsets.tolist())
        self.builder.add_stream(addresses, data, opsize, tids, transfers)
        self.instructions += len(opsize)


def _unaligned(b: np.ndarray, dtype: str) -> np.ndarray:
    """A view of b with one little-endian word starting at every byte offset (no copy): a gather of
    word offsets then reads pointer values and thread ids wherever they sit, aligned or not."""
    word = np.dtype(dtype)
    return np.ndarray((len(b) - word.itemsize + 1,), dtype=word, buffer=b, strides=(1,))


def _partial_problem(tail: bytes, ptr: int) -> str:
    """Why the bytes left at end of file are not a block (the most specific reason available)."""
    if tail[0] != 0:
        return f"block type {tail[0]} (only type 0 exists)"
    if len(tail) >= 4 and not 1 <= (tail[3] & 0x7F) <= 15:
        return f"opcode length {tail[3] & 0x7F} (must be 1 to 15)"
    return f"block cut off by the end of the file ({len(tail)} bytes of it present)"


def read_x64dbg(path: str | Path, allow_truncated: bool = False, chunk_bytes: int = CHUNK_BYTES) -> Trace:
    """Read an x64dbg binary trace into a Trace (source "x64dbg").

    Raises TraceReadError naming the byte offset of the first problem.  With allow_truncated, a problem
    in the block stream (not in the header) ends the trace instead: the instructions before it are
    kept and the problem is recorded in meta.stop_detail and meta.events.
    """
    path = Path(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115  (closed below; `with` would hide the OSError mapping)
    except OSError as e:
        raise TraceReadError(f"{path}: cannot open ({e.strerror or e})") from None
    with fh:
        info, layout, offset = read_header(fh, path)
        builder = BlockBuilder(layout.arch.bits)
        decoder = _RecordDecoder(layout, builder)
        problem: tuple[int, str] | None = None
        pending = b""
        while problem is None:
            chunk = fh.read(chunk_bytes)
            if not chunk:
                if pending:
                    problem = (offset, _partial_problem(pending, layout.ptr))
                break
            buf = pending + chunk if pending else chunk
            starts, consumed = _scan_records(buf, layout.ptr)
            found = decoder.feed(buf, starts)
            if found is not None:
                problem = (offset + found[0], found[1])
                break
            offset += consumed
            pending = buf[consumed:]
    blocks, visits, threads = builder.finish()
    meta = TraceMeta(
        sha256=_header_str(info, "sha256").lower(),
        arch=layout.arch,
        source="x64dbg",
        stop_reason=StopReason.IMPORTED,
        file_name=ntpath.basename(_header_str(info, "path")),
        settings={"trace_file": str(path), "x64dbg_header": info},
    )
    if problem is not None:
        error = at_byte(path, *problem)
        if not allow_truncated:
            raise error
        meta.stop_detail = f"truncated: {error}"
        meta.events.append(
            {"kind": "truncated", "offset": problem[0], "problem": problem[1], "kept": decoder.instructions}
        )
    return Trace(meta=meta, blocks=blocks, visits=visits, threads=threads)


def _header_str(info: dict, key: str) -> str:
    value = info.get(key, "")
    return value if isinstance(value, str) else ""


# ---------------------------------------------------------------------------------------------------
# Writing


class _RecordEncoder:
    """Encodes one instruction's block, following x64dbg's own register-dump rule."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.value = struct.Struct("<Q" if layout.ptr == 8 else "<I")
        self.ip_change = bytes([layout.ip_slot])  # relative index of the IP when it is the only change
        # A full dump: relative indices all 0 (slots 0, 1, 2, ...), every slot 0 but the IP.
        self.dump_prefix = bytes(layout.dump_slots) + bytes(layout.ptr * layout.ip_slot)
        self.dump_suffix = bytes(layout.ptr * (layout.dump_slots - layout.ip_slot - 1))

    def encode(
        self, opcode: bytes, address: int, tid: int | None, full_dump: bool, ip_changed: bool
    ) -> bytes:
        lay = self.layout
        size_flags = len(opcode) | (THREAD_BIT if tid is not None else 0)
        thread = _U32.pack(tid) if tid is not None else b""
        if full_dump:
            head = bytes((0, lay.dump_slots, 0, size_flags))
            return head + thread + opcode + self.dump_prefix + self.value.pack(address) + self.dump_suffix
        if ip_changed:
            head = bytes((0, 1, 0, size_flags))
            return head + thread + opcode + self.ip_change + self.value.pack(address)
        return bytes((0, 0, 0, size_flags)) + thread + opcode


def write_x64dbg(trace: Trace, path: str | Path) -> Path:
    """Write the trace as an x64dbg binary trace; atomically (temporary file, then rename).

    Only the instruction pointer is known, so full dumps hold it and zeros, blocks in between hold it
    alone, and there are no memory accesses.  Needs instruction bytes: a trace read from a text log
    cannot be written in this format.
    """
    path = Path(path)
    layout = LAYOUT_OF_ARCH[trace.arch]
    if any(block.instruction_count and not block.data for block in trace.blocks):
        raise ValueError("the trace has no instruction bytes (read from a text log); x64dbg traces need them")
    limit = 1 << (8 * layout.ptr)
    if any(not 0 <= block.address < limit or block.end > limit for block in trace.blocks):
        raise ValueError(f"an instruction address does not fit the {layout.name} pointer size")
    for block in trace.blocks:
        if any(not 1 <= n <= 15 for n in block.insn_lengths):
            raise ValueError(f"block at {block.address:#x} has an instruction length outside 1..15")

    info: dict = {"ver": 1, "arch": layout.name}
    if trace.meta.file_name:
        info["path"] = trace.meta.file_name
    if trace.meta.sha256:
        info["sha256"] = trace.meta.sha256
    header = json.dumps(info).encode()
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb", buffering=1 << 20) as out:
        out.write(MAGIC + _U32.pack(len(header)) + header)
        for piece in _encode_visits(trace, _RecordEncoder(layout)):
            out.write(piece)
    tmp.replace(path)
    return path


def _encode_visits(trace: Trace, enc: _RecordEncoder):
    """Yields the encoded blocks, about one bytes object per visit.

    Most visits need exactly the block's instructions with only the IP changing; those bytes are
    built once per distinct block and reused (apart from the first instruction, whose thread bit and
    IP change depend on what ran before).
    """
    blocks = trace.blocks
    threads = trace.threads.tolist() if trace.threads is not None else None
    tails: dict[int, bytes] = {}  # block id -> encoding of its instructions after the first
    pieces: dict[int, list[tuple[bytes, int]]] = {}  # block id -> (opcode, address) per instruction
    count = 0  # instructions written so far
    prev_address: int | None = None
    prev_tid: int | None = None
    batch: list[bytes] = []
    for i, block_id in enumerate(trace.visits.tolist()):
        insns = pieces.get(block_id)
        if insns is None:
            insns = pieces[block_id] = _split(blocks[block_id])
        if not insns:
            continue
        tid = threads[i] if threads is not None else 0
        new_thread = tid if tid != prev_tid else None
        k = len(insns)
        # Is there a full dump at any instruction after the first one of this visit?
        dump_inside = (count + k - 1) // FULL_DUMP_EVERY != count // FULL_DUMP_EVERY
        opcode, address = insns[0]
        batch.append(
            enc.encode(opcode, address, new_thread, count % FULL_DUMP_EVERY == 0, address != prev_address)
        )
        if not dump_inside:
            tail = tails.get(block_id)
            if tail is None:
                tail = tails[block_id] = b"".join(enc.encode(o, a, None, False, True) for o, a in insns[1:])
            batch.append(tail)
        else:
            for j in range(1, k):
                o, a = insns[j]
                batch.append(enc.encode(o, a, None, (count + j) % FULL_DUMP_EVERY == 0, True))
        count += k
        prev_address, prev_tid = insns[-1][1], tid
        if len(batch) >= 4096:
            yield b"".join(batch)
            batch = []
    if batch:
        yield b"".join(batch)


def _split(block) -> list[tuple[bytes, int]]:
    out, offset = [], 0
    for address, n in zip(block.instruction_addresses(), block.insn_lengths, strict=True):
        out.append((block.data[offset : offset + n], address))
        offset += n
    return out


def export_path(out_dir: str | Path, sha256: str, arch: Arch) -> Path:
    """Where `runtrace trace --format x64dbg` puts a sample's x64dbg trace: beside its `.rtrace`."""
    return Path(out_dir) / f"{sha256}{'.trace32' if arch.bits == 32 else '.trace64'}"


def write_export(trace: Trace, out_dir: str | Path, replace: bool = True) -> Path:
    """The trace as `<sha256>.trace32/.trace64` in out_dir; `replace=False` keeps one already there (a
    trace traced before, whose export an earlier run wrote)."""
    path = export_path(out_dir, trace.meta.sha256, trace.arch)
    if replace or not path.exists():
        write_x64dbg(trace, path)
    return path


register(
    TraceFormat(
        "x64dbg",
        read=read_x64dbg,
        write=write_x64dbg,
        suffixes=SUFFIXES,
        probe=lambda path, head: head == MAGIC,
    )
)
