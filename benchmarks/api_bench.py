"""What one Windows API call costs the tracer.

Two small synthetic programs (tests/emu_pe.py: i386 and amd64) call `GetCurrentProcessId` in a loop;
the cost of a call is the difference between 4,000 and 10 calls, divided by 3,990, best of three runs.
The loop's own instructions are a few per call, so nearly all of it is the call: trapping it,
Speakeasy's handler, returning, and recording.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from runtrace.trace.emulate.emulator import emulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from emu_pe import api_loop  # noqa: E402  (a test helper: the programs are written byte by byte there)

CALLS = (10, 4000)


def _seconds(data: bytes) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        emulate(data, "api-loop", "api-loop")
        best = min(best, time.perf_counter() - started)
    return best


def run() -> dict:
    rows = []
    for arch in ("i386", "amd64"):
        few, many = (_seconds(api_loop(arch, n)) for n in CALLS)
        rows.append(
            {
                "arch": arch,
                "calls": CALLS[1],
                "us_per_api_call": round(1e6 * (many - few) / (CALLS[1] - CALLS[0]), 1),
            }
        )
    return {
        "median_us_per_api_call": sorted(r["us_per_api_call"] for r in rows)[len(rows) // 2],
        "rows": rows,
    }
