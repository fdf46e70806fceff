"""How fast debugger traces are imported (the step `runtrace convert` and dataset building pay for every
imported trace).

Two x64dbg files of over a million instructions each are written and read back:
- `written`: runtrace's own writer (only the instruction pointer changes, no memory accesses);
- `x64dbg-like`: blocks shaped like x64dbg's own output, with a few changed registers and up to two
  memory accesses per instruction (about twice the bytes per instruction).
"""

from __future__ import annotations

import random
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

from runtrace.trace.disasm import instruction_lengths
from runtrace.trace.formats.x64dbg import read_x64dbg, write_x64dbg
from runtrace.trace.model import Arch, BasicBlock, Trace, TraceMeta

# Ordinary x64 instructions (none is a control transfer) and the transfers that end blocks.
_BODY = [
    "4883ec28", "488b442408", "4889c1", "31c0", "48ffc0", "4c8b4424f8", "488d0d00100000", "4d8b04c8",
    "85c0", "4883c408", "c745fc10000000", "0fb601", "4801d8", "50", "5b",
]  # fmt: skip
_ENDS = ["7405", "e800000000", "c3", "ebfe", "ffd0", "0f84f0ffffff"]


def synthetic_trace(min_instructions: int, n_blocks: int = 2000, seed: int = 0) -> Trace:
    """Distinct basic blocks laid out one after another, visited in a skewed random order."""
    rng = random.Random(seed)
    blocks, address = [], 0x140001000
    for _ in range(n_blocks):
        body = [bytes.fromhex(rng.choice(_BODY)) for _ in range(rng.randint(1, 10))]
        data = b"".join(body) + bytes.fromhex(rng.choice(_ENDS))
        blocks.append(BasicBlock(address, data, instruction_lengths(data, address, 64)))
        address += len(data) + 16
    counts = np.array([b.instruction_count for b in blocks])
    weights = 1.0 / np.arange(1, n_blocks + 1)  # a few hot blocks, a long tail (as real programs)
    weights /= weights.sum()
    n_visits = int(min_instructions / (counts * weights).sum() * 1.05) + 1
    visits = np.random.default_rng(seed).choice(n_blocks, size=n_visits, p=weights).astype(np.uint32)
    return Trace(TraceMeta("", Arch.AMD64, "benchmark"), blocks, visits)


def write_x64dbg_like(trace: Trace, path: Path, seed: int = 0) -> None:
    """The trace as x64dbg itself would record it: rip plus 1-3 other registers (rax..rdi, eflags)
    changed per instruction, 0-2 memory accesses (reads without a new value, writes with one)."""
    rng = random.Random(seed)
    q = struct.Struct("<Q")
    shapes = []  # a few hundred block tails (registers and memory), reused at random
    for _ in range(256):
        slots = sorted(rng.sample(range(8), rng.randint(1, 3))) + [16] + ([17] if rng.random() < 0.5 else [])
        rel = bytes(s - p - 1 for s, p in zip(slots, [-1, *slots[:-1]], strict=True))
        mem = [rng.random() < 0.6 for _ in range(rng.choice([0, 0, 1, 1, 2]))]  # True: a read
        shapes.append((slots, rel, mem))
    header = b'{"ver":1,"arch":"x64"}'
    with open(path, "wb", buffering=1 << 20) as out:
        out.write(b"TRAC" + struct.pack("<I", len(header)) + header)
        first = True
        for _, insn in trace.iter_instructions():
            slots, rel, mem = shapes[rng.randrange(256)]
            values = b"".join(q.pack(insn.address if s == 16 else 0x1000 + s) for s in slots)
            flags = bytes(1 if read else 0 for read in mem)
            addrs = b"".join(q.pack(0x7FF000 + 8 * i) for i in range(len(mem)))
            new = b"".join(q.pack(7) for read in mem if not read)
            size_flags = len(insn.data) | (0x80 if first else 0)
            tid = struct.pack("<I", 0x1A2C) if first else b""
            out.write(bytes((0, len(slots), len(mem), size_flags)) + tid + insn.data + rel + values)
            out.write(flags + addrs + addrs + new)
            first = False


def _time_read(path: Path) -> tuple[float, float, Trace]:
    """Best of three wall-clock and CPU times: on a shared machine other work only slows a run down,
    and CPU time is less sensitive to it."""
    best_wall = best_cpu = float("inf")
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.process_time()
        back = read_x64dbg(path)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, back


def run() -> dict:
    trace = synthetic_trace(1_000_000)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        written, like = Path(tmp) / "written.trace64", Path(tmp) / "x64dbg_like.trace64"
        write_x64dbg(trace, written)
        write_x64dbg_like(trace, like)
        for name, path in (("", written), ("_x64dbg_like", like)):
            wall, cpu, back = _time_read(path)
            n = back.instruction_count
            out[f"x64dbg_read_insn_per_s{name}"] = round(n / wall)
            out[f"x64dbg_read_insn_per_cpu_s{name}"] = round(n / cpu)
            out[f"file_mb{name}"] = round(path.stat().st_size / 1e6, 1)
        out["instructions"] = n
        out["visits"] = back.visit_count
    return out


if __name__ == "__main__":
    print(run())
