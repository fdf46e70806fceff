"""Cutting executed code into canonical basic blocks.

The rule (the same for every source): a block ends after a control-transfer instruction, and a new
block starts wherever the next executed instruction is not the next one in memory or belongs to
another thread.  Blocks are identified by (address, bytes), so self-modified code at an old address is
a new block.
"""

from __future__ import annotations

import numpy as np

from runtrace.trace.disasm import decode_one, executed_code, is_control_transfer
from runtrace.trace.model import BasicBlock


class BlockBuilder:
    """Accumulates executed instructions one at a time; `finish` returns blocks, visits and threads."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.blocks: list[BasicBlock] = []
        self._index: dict[tuple, int] = {}
        self._visits: list[int] = []
        self._threads: list[int] = []
        self._start = -1
        self._end = -1
        self._tid = 0
        self._data = bytearray()
        self._lengths: list[int] = []
        # Disassembly of the block being built when it comes from a text log (no bytes); empty otherwise.
        self._texts: list[str] = []

    def add(self, address: int, data: bytes, tid: int = 0, mnemonic: str | None = None) -> None:
        if self._lengths and (address != self._end or tid != self._tid or self._texts):
            self._close()
        if mnemonic is None:
            insn = decode_one(data, address, self.bits)
            mnemonic = insn.mnemonic if insn else "(bad)"
        if not self._lengths:
            self._start, self._tid = address, tid
        self._data += data
        self._lengths.append(len(data))
        self._end = address + len(data)
        if is_control_transfer(mnemonic):
            self._close()

    @property
    def visit_count(self) -> int:
        """Visits closed so far (the block being built is not counted yet)."""
        return len(self._visits)

    @property
    def current_visit(self) -> int:
        """Index of the visit the last instruction added belongs to (-1 before the first)."""
        return len(self._visits) if self._lengths else len(self._visits) - 1

    def add_text(
        self, address: int, text: str, length: int, tid: int = 0, mnemonic: str | None = None
    ) -> None:
        """One executed instruction known only by its disassembly (text trace logs).

        `length` is the byte length inferred by the caller, 0 when unknown.  An unknown length means
        the next instruction cannot be shown to be the next one in memory, so the block ends here.
        `mnemonic` as capstone spells it, prefixes included ("bnd jmp"); default: the first word.
        """
        if self._lengths and (address != self._end or tid != self._tid or not self._texts):
            self._close()
        if not self._lengths:
            self._start, self._tid = address, tid
        self._texts.append(text)
        self._lengths.append(length)
        self._end = address + length
        if length == 0 or is_control_transfer(mnemonic or text.partition(" ")[0]):
            self._close()

    def add_stream(
        self,
        addresses: np.ndarray,
        data: bytes,
        lengths: np.ndarray,
        tids: np.ndarray,
        transfers: np.ndarray,
    ) -> None:
        """Many executed instructions at once: the same result as calling `add` for each, in order.

        `data` is the instructions' bytes concatenated, `lengths` their sizes, `transfers` whether each
        is a control transfer (as `add` decides from the mnemonic).  Debugger traces hold millions of
        instructions; deciding the block ends with numpy and touching Python objects once per block
        visit instead of once per instruction is what makes importing them fast.
        """
        n = len(addresses)
        if n == 0:
            return
        if not isinstance(data, bytes):
            data = bytes(data)  # slices must be hashable and compare equal to `add`'s keys
        addr = np.asarray(addresses, dtype=np.uint64)
        lens = np.asarray(lengths, dtype=np.int64)
        tid = np.asarray(tids, dtype=np.uint32)
        ends = addr + lens.astype(np.uint64)
        new_block = np.empty(n, dtype=bool)  # instruction i starts a new block
        new_block[1:] = transfers[:-1] | (addr[1:] != ends[:-1]) | (tid[1:] != tid[:-1])
        first_addr, first_tid = int(addr[0]), int(tid[0])
        continues = bool(self._lengths) and not self._texts
        continues = continues and first_addr == self._end and first_tid == self._tid
        if self._lengths and not continues:
            self._close()
        new_block[0] = not continues

        seg_lo = np.flatnonzero(new_block)
        if continues:
            seg_lo = np.concatenate(([0], seg_lo))
        seg_hi = np.append(seg_lo[1:], n)
        byte_off = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=byte_off[1:])
        last_is_open = not transfers[-1]  # the final block may go on in the next call

        lo_list, hi_list = seg_lo.tolist(), seg_hi.tolist()
        blo_list, bhi_list = byte_off[seg_lo].tolist(), byte_off[seg_hi].tolist()
        addr_list, tid_list = addr[seg_lo].tolist(), tid[seg_lo].tolist()
        n_seg = len(lo_list)
        closed = range(n_seg - 1 if last_is_open else n_seg)

        first = 0
        if continues:  # the first segment completes the block left open by the previous call
            self._data += data[blo_list[0] : bhi_list[0]]
            self._lengths.extend(lens[lo_list[0] : hi_list[0]].tolist())
            self._end = int(ends[hi_list[0] - 1])
            if n_seg > 1 or not last_is_open:
                self._close()
            first = 1

        # The closed blocks of this call: look all of them up at once (C-level loops over lists), then
        # add the few not seen before one by one, in order, so ids still follow first visits.
        done = slice(first, closed.stop)
        keys = list(
            zip(
                addr_list[done],
                map(data.__getitem__, map(slice, blo_list[done], bhi_list[done])),
                strict=True,
            )
        )
        index, blocks = self._index, self.blocks
        ids = list(map(index.get, keys))
        k = -1
        while True:
            try:
                k = ids.index(None, k + 1)
            except ValueError:
                break
            key = keys[k]
            block_id = index.get(key)  # an earlier visit in this call may have added it
            if block_id is None:
                block_id = index[key] = len(blocks)
                lo, hi = lo_list[first + k], hi_list[first + k]
                blocks.append(BasicBlock(key[0], key[1], tuple(lens[lo:hi].tolist())))
            ids[k] = block_id
        self._visits.extend(ids)
        self._threads.extend(tid_list[done])

        if last_is_open and n_seg > first:
            k = n_seg - 1
            self._start, self._tid = addr_list[k], tid_list[k]
            self._data = bytearray(data[blo_list[k] : bhi_list[k]])
            self._lengths = lens[lo_list[k] : hi_list[k]].tolist()
            self._end = int(ends[n - 1])

    def _close(self) -> None:
        if self._texts:
            # Text blocks have no bytes: their identity is the disassembly (and inferred lengths).
            texts, lengths = tuple(self._texts), tuple(self._lengths)
            key: tuple = (self._start, texts, lengths)
            block_id = self._index.get(key)
            if block_id is None:
                block_id = self._index[key] = len(self.blocks)
                self.blocks.append(BasicBlock(self._start, b"", lengths, texts))
            self._texts = []
        else:
            key = (self._start, bytes(self._data))
            block_id = self._index.get(key)
            if block_id is None:
                block_id = len(self.blocks)
                self._index[key] = block_id
                self.blocks.append(BasicBlock(self._start, key[1], tuple(self._lengths)))
        self._visits.append(block_id)
        self._threads.append(self._tid)
        self._data = bytearray()
        self._lengths = []

    def finish(self) -> tuple[list[BasicBlock], np.ndarray, np.ndarray | None]:
        if self._lengths:
            self._close()
        threads = np.asarray(self._threads, dtype=np.uint32)
        has_threads = len(threads) and bool((threads != threads[0]).any() or threads[0] != 0)
        return self.blocks, np.asarray(self._visits, dtype=np.uint32), threads if has_threads else None


def canonicalize(
    raw_blocks: list[tuple[int, bytes]],
    raw_visits: np.ndarray,
    bits: int,
    raw_code: list[tuple[tuple[int, ...], str | None]] | None = None,
) -> tuple[list[BasicBlock], np.ndarray, np.ndarray]:
    """Merge an emulator's translation blocks into canonical blocks.

    An emulator's blocks (unicorn translation blocks) also end at page boundaries and size limits, not
    only at control transfers; consecutive visits are merged where the first does not end in a
    control transfer and the second starts where the first ends.  Returns the canonical blocks, their
    visit sequence, and for every raw visit the index of the canonical visit that contains it.
    `raw_code`: each raw block's `executed_code`, when the caller decoded it already (the recorder).
    """
    n_raw = len(raw_blocks)
    if raw_code is None:
        raw_code = [executed_code(data, addr, bits) for addr, data in raw_blocks]
    lengths = [lens for lens, _ in raw_code]
    starts = np.fromiter((a for a, _ in raw_blocks), dtype=np.uint64, count=n_raw)
    ends = np.fromiter((a + len(d) for a, d in raw_blocks), dtype=np.uint64, count=n_raw)
    open_end = np.zeros(n_raw, dtype=bool)
    for i, ((addr, data), (lens, last_mnemonic)) in enumerate(zip(raw_blocks, raw_code, strict=True)):
        if not lens:
            continue
        if last_mnemonic is None:  # a prefix or bytes capstone refuses end the block: decode them alone
            last = decode_one(data[len(data) - lens[-1] :], addr + len(data) - lens[-1], bits)
            last_mnemonic = None if last is None else last.mnemonic
        open_end[i] = last_mnemonic is not None and not is_control_transfer(last_mnemonic)

    v = raw_visits.astype(np.int64)
    merge = np.zeros(len(v), dtype=bool)
    if len(v) > 1:
        # A visit continues the one before where that one is open and ends where this one starts.  The
        # addresses are numbered first (small integers gather faster than addresses), and a block that
        # ends in a control transfer gets an end no block starts at.
        codes = np.unique(np.concatenate([starts, ends]), return_inverse=True)[1].reshape(-1).astype(np.int32)
        start_code, end_code = codes[:n_raw], codes[n_raw:]
        end_code[~open_end] = -1
        np.equal(start_code[v[1:]], end_code[v[:-1]], out=merge[1:])
    group_of_raw = np.cumsum(~merge) - 1  # canonical visit index of every raw visit
    n_groups = int(group_of_raw[-1]) + 1 if len(v) else 0

    blocks: list[BasicBlock] = []
    index: dict[tuple[int, bytes], int] = {}

    def block_id(parts: list[int]) -> int:
        if len(parts) == 1:  # most blocks: the raw block as it is
            addr, data = key = raw_blocks[parts[0]]
        else:
            addr = raw_blocks[parts[0]][0]
            data = b"".join(raw_blocks[p][1] for p in parts)
            key = (addr, data)
        found = index.get(key)
        if found is None:
            found = index[key] = len(blocks)
            lens = lengths[parts[0]] if len(parts) == 1 else tuple(x for p in parts for x in lengths[p])
            blocks.append(BasicBlock(addr, data, lens))
        return found

    # Most visits are not merged: map those through a per-raw-block table, loop only over merges.
    single_id = np.array([block_id([i]) for i in range(n_raw)], dtype=np.uint32) if n_raw else np.zeros(0)
    visits = np.empty(n_groups, dtype=np.uint32)
    group_starts = np.flatnonzero(~merge)
    group_sizes = np.diff(np.append(group_starts, len(v)))
    simple = group_sizes == 1
    visits[simple] = single_id[v[group_starts[simple]]]
    merged = np.flatnonzero(~simple)
    # A merged visit repeats an earlier one's raw blocks far more often than not (a loop over code
    # unicorn cut, a straight run recorded an instruction at a time): each distinct sequence is looked
    # up once, in order of first visit, so blocks are created in the order one pass over the visits
    # creates them.
    firsts, which = _distinct_runs(v, group_starts[merged], group_sizes[merged])
    distinct = merged[firsts]
    runs = zip(group_starts[distinct].tolist(), group_sizes[distinct].tolist(), strict=True)
    ids = [block_id(v[s : s + n].tolist()) for s, n in runs]
    visits[merged] = np.asarray(ids, dtype=np.uint32)[which]
    # Number blocks by first visit (as BlockBuilder does, so both routes give the same dictionary) and
    # drop raw blocks that only ever occurred inside a merge.
    first = np.full(len(blocks), n_groups, dtype=np.int64)
    np.minimum.at(first, visits, np.arange(n_groups))
    used = np.flatnonzero(first < n_groups)
    used = used[np.argsort(first[used])]
    remap = np.full(len(blocks), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    blocks = [blocks[i] for i in used.tolist()]
    return blocks, remap[visits].astype(np.uint32), group_of_raw


def _distinct_runs(v: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct sequences among the runs v[starts[i] : starts[i] + sizes[i]]: the index of each one's
    first run, in order, and for every run the position of its sequence in that list.  Runs are told
    apart by a hash of their elements and then compared element by element with the run they were
    matched to; where a hash matched unequal runs, every run is its own sequence (correct, slower)."""
    n = len(starts)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    heads = np.cumsum(sizes) - sizes  # where each run's elements begin in `elements`
    offset = np.arange(int(sizes.sum())) - np.repeat(heads, sizes)  # each element's place in its run
    elements = v[np.repeat(starts, sizes) + offset].astype(np.uint64)
    with np.errstate(over="ignore"):  # the hash is arithmetic modulo 2**64
        powers = np.cumprod(np.full(int(sizes.max()), 0x9E3779B97F4A7C15, dtype=np.uint64), dtype=np.uint64)
        hashed = np.add.reduceat((elements + np.uint64(1)) * powers[offset], heads)
        hashed ^= sizes.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    _, first_of_key, key_of_run = np.unique(hashed, return_index=True, return_inverse=True)
    representative = first_of_key[key_of_run]
    same = elements == v[np.repeat(starts[representative], sizes) + offset].astype(np.uint64)
    if not same.all():
        return np.arange(n), np.arange(n)
    order = np.argsort(first_of_key)  # sequences by their first run
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    return first_of_key[order], position[key_of_run]
