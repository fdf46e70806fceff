"""Tracer throughput against a naive reference tracer, trace size, load time, tracer memory.

The reference tracer is what one writes first: a per-instruction unicorn hook that disassembles every
instruction with capstone and formats a text line.  Both run in this process on the same samples with
the same instruction budget, so the ratio holds whatever the machine.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import capstone
import speakeasy
from unicorn import UC_HOOK_CODE

from runtrace.trace.emulate.emulator import TracerSettings, _speakeasy_config, emulate
from runtrace.trace.formats.native import load_trace, save_trace

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
BUDGET = 1_000_000
# Samples from the capa test corpus that run past one million instructions (found by `runtrace trace`).
LONG_RUNNERS = ("f58c502a1f", "39fb2b683d", "377fdff7fd", "39655d8f0d")


def _samples() -> list[tuple[str, bytes]]:
    rows = list(csv.DictReader((SHARED / "capa-testfiles.csv").read_text().splitlines()))
    with zipfile.ZipFile(SHARED / "capa-testfiles.zip") as z:
        z.setpassword(b"infected")
        return [(r["sha256"], z.read(r["sha256"] + ".bin")) for r in rows if r["sha256"][:10] in LONG_RUNNERS]


def reference_trace(data: bytes, budget: int) -> tuple[int, float, int]:
    """(instructions, seconds, text bytes) for the naive per-instruction tracer."""
    log = logging.getLogger("bench.reference")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    se = speakeasy.Speakeasy(config=_speakeasy_config(TracerSettings()), logger=log)
    module = se.load_module(data=data)
    bits = 64 if se.get_arch() == 9 else 32  # speakeasy's ARCH_AMD64 is 9
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64 if bits == 64 else capstone.CS_MODE_32)
    out = io.StringIO()
    count = [0]

    def hook(uc, address, size, user_data):
        insn = next(cs.disasm(bytes(uc.mem_read(address, size)), address), None)
        out.write(f"{address:08X}  {insn.mnemonic if insn else '??'} {insn.op_str if insn else ''}\n")
        count[0] += 1
        if count[0] >= budget:
            uc.emu_stop()

    se.emu.emu_eng.emu.hook_add(UC_HOOK_CODE, hook)
    started = time.perf_counter()
    se.run_module(module, all_entrypoints=True)
    return count[0], time.perf_counter() - started, len(out.getvalue().encode())


def run() -> dict:
    if not (SHARED / "capa-testfiles.zip").exists():
        return {"skipped": "../shared/samples not present"}
    rows = []
    for sha, data in _samples():
        t0 = time.perf_counter()
        trace = emulate(data, sha, settings=TracerSettings(max_instructions=BUDGET))
        ours_s = time.perf_counter() - t0
        ref_n, ref_s, text_bytes = reference_trace(data, BUDGET)
        with tempfile.TemporaryDirectory() as tmp:
            path = save_trace(trace, Path(tmp) / "t.rtrace")
            size = os.path.getsize(path)
            t0 = time.perf_counter()
            loaded = load_trace(path)
            _ = loaded.instruction_count
            load_s = time.perf_counter() - t0
        ours_ips = trace.instruction_count / ours_s
        ref_ips = ref_n / ref_s
        rows.append({
            "sample": sha[:12], "instructions": trace.instruction_count, "runtrace_s": round(ours_s, 3),
            "runtrace_insn_per_s": round(ours_ips), "reference_instructions": ref_n,
            "reference_s": round(ref_s, 2), "reference_insn_per_s": round(ref_ips),
            "speedup": round(ours_ips / ref_ips, 1), "trace_bytes": size, "text_log_bytes": text_bytes,
            "text_to_trace_ratio": round(text_bytes / size, 1), "load_s": round(load_s, 3),
        })  # fmt: skip
    return {
        "rows": rows,
        "median_speedup": round(statistics.median(r["speedup"] for r in rows), 1),
        "median_insn_per_s": round(statistics.median(r["runtrace_insn_per_s"] for r in rows)),
        "min_text_to_trace_ratio": min(r["text_to_trace_ratio"] for r in rows),
        "max_load_s": max(r["load_s"] for r in rows),
    }
