"""`make bench`: run every benchmark module and rewrite docs/benchmarks.md with the figures.

Each module has `run() -> dict`; a dict with "rows" becomes a table, the other keys a list of headline
figures.  The machine the figures came from is written beside them (and the load average, since a
shared machine's other work lowers absolute speeds; ratios measured in one run are the robust figures).
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

ROOT = Path(__file__).resolve().parents[1]
MODULES = {
    "tracer": ("Tracer", "benchmarks.tracer_bench"),
    "api": ("Cost of an API call", "benchmarks.api_bench"),
    "coverage": ("Emulation coverage", "benchmarks.coverage_bench"),
    "formats": ("Debugger trace formats", "benchmarks.formats_bench"),
    "models": ("Model training throughput", "benchmarks.models_bench"),
    "scan": ("Scan latency", "benchmarks.scan_bench"),
    "serve": ("Scanning service under 100 concurrent uploads", "benchmarks.serve_bench"),
    "memory": ("Scanner memory vs input size", "benchmarks.memory_bench"),
    "dataset-memory": ("Dataset build memory vs number of traces", "benchmarks.dataset_memory_bench"),
    "similar": ("Similarity index at scale", "benchmarks.similar_bench"),
}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((x.split(":", 1)[1].strip() for x in cpuinfo if x.startswith("model name")), cpu)
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem_kb = int(next(x for x in meminfo if x.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    system = f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_kb / 2**20:.0f} GiB RAM, {system}; load average at start {load}"
    )


def render(title: str, result: dict) -> str:
    lines = [f"## {title}", ""]
    if "skipped" in result:
        return "\n".join([*lines, f"Skipped: {result['skipped']}", ""])
    for key, value in result.items():
        if key in ("rows", "notes"):
            continue
        lines.append(f"- **{key}**: {value}")
    rows = result.get("rows") or []
    if rows:
        cols = list(rows[0])
        lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    for note in result.get("notes", []):
        lines += ["", note]
    return "\n".join([*lines, ""])


def main(argv: list[str]) -> None:
    wanted = argv or list(MODULES)
    results_path = ROOT / "docs" / "benchmarks.json"
    previous = json.loads(results_path.read_text()) if results_path.exists() else {}
    header = machine()
    for name in wanted:
        title, module = MODULES[name]
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            result = {"skipped": f"benchmark module not available ({e})"}
        else:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            result = mod.run()
        previous[name] = {"title": title, "machine": header, "date": datetime.date.today().isoformat(),
                          "result": result}  # fmt: skip
    write(previous)


def write(previous: dict) -> None:
    """docs/benchmarks.json and docs/benchmarks.md from the recorded results."""
    out = ROOT / "docs" / "benchmarks.md"
    (ROOT / "docs" / "benchmarks.json").write_text(json.dumps(previous, indent=1))
    parts = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks.run [NAME...]`); each section names the machine and",
        "date it was measured on.",
        "",
    ]
    # Entries without a module (figures recorded from a long run, e.g. a full evaluation) follow.
    for name in [*MODULES, *(k for k in previous if k not in MODULES)]:
        if name in previous:
            entry = previous[name]
            parts.append(render(entry["title"], entry["result"]).rstrip())
            parts += ["", f"_Measured {entry['date']} on {entry['machine']}._", ""]
    out.write_text("\n".join(parts))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
