"""tracer_bench's measurement in CPU time: the same four samples, budget and naive reference, each timed
with `time.process_time` (ours best of 3, the reference once), so a loaded machine slows both less
than wall time does.

Run it from the tree to measure, with that tree first on the path; it uses that tree's tracer_bench, so
it measures older trees too:

    cd TREE && PYTHONPATH=TREE/src:TREE python /path/to/benchmarks/tracer_cpu_bench.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time

sys.path.insert(0, ".")  # the tree being measured, not this file's


def run() -> dict:
    from benchmarks import tracer_bench as bench
    from runtrace.trace.emulate.emulator import TracerSettings, emulate

    rows = []
    for sha, data in bench._samples():
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            trace = emulate(data, sha, settings=TracerSettings(max_instructions=bench.BUDGET))
            best = min(best, time.process_time() - started)
        ours = trace.instruction_count / best
        wall = bench.time.perf_counter
        bench.time.perf_counter = time.process_time  # the reference's own timer, in CPU time
        try:
            n, seconds, _ = bench.reference_trace(data, bench.BUDGET)
        finally:
            bench.time.perf_counter = wall
        speedup = round(ours / (n / seconds), 1)
        rows.append({"sample": sha[:12], "cpu_insn_per_s": round(ours), "speedup": speedup})
    return {
        "rows": rows,
        "median_cpu_insn_per_s": round(statistics.median(r["cpu_insn_per_s"] for r in rows)),
        "median_speedup": round(statistics.median(r["speedup"] for r in rows), 1),
    }


if __name__ == "__main__":
    print(json.dumps(run()))
