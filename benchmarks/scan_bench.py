"""`runtrace scan FILE` latency, measured as an analyst sees it: one whole process per file.

Each file is scanned by a fresh `runtrace scan FILE --json` process pinned to one core (`taskset -c 0`
when available), so the figure includes interpreter start-up, imports (ONNX Runtime's among them),
loading the model's graphs, emulation in the tracer child, representation, inference and the
explanation.  Reported: median and p95 wall time over the
files, the stages' share (from the result document's timings), and the throughput of one batch process
over all files with 2 tracer workers.

Files: an evenly spread subset of the capa test corpus (../shared/samples) when present — members are
extracted to a temporary directory outside the repository and deleted afterwards — else the bundled
benign fixtures.  Model: the default model when installed; otherwise a BSM model of the default size
with weights from one epoch on synthetic traces (latency depends on the model's size, not its skill).
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from runtrace.trace.settings import TracerSettings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "samples"
FIXTURES = ROOT / "tests" / "fixtures" / "benign"
N_CORPUS_FILES = 24
PROCESS_TIMEOUT_S = 180
_LIMITS = TracerSettings()
# Measured once, not rerun: the scanner's inference moved from numpy to ONNX Runtime (issue 22).
BEFORE_AFTER_ONNX = (
    "ONNX Runtime against the numpy inference it replaced, measured once on 2026-12-06 with the same 24 "
    "files, pinned to core 0, alternating the two versions file by file (best of 2 runs each), on a "
    "machine other agents kept busy (load average 7.4-9.4 on 2 cores, so every time is about twice an "
    "idle machine's): median 1.271 s against 1.160 s; paired per file, the ONNX version took a median "
    "0.035 s more wall time and 0.028 s more CPU time (whole process tree). Where it comes from: "
    "importing onnxruntime (about 28 ms of CPU, its 36 MB library) and creating the three sessions "
    "(about 20 ms) against about 14 ms to load the numpy model; scoring and explaining are a little "
    "faster (in one process over the 24 traces, best of 3: median scoring 0.018 s against 0.025 s, "
    "explanation 0.059 s against 0.063-0.070 s). This benchmark run back to back with the numpy version "
    "in the same session gave medians of 1.491 s (ONNX, above) against 1.584 s (numpy, load 9.6), and an "
    "hour earlier 1.003 s against 1.167 s (load 6.0): on a shared machine the unpaired medians move with "
    "the load more than with the change, so the paired figures are the ones to read."
)


def _command(pinned: bool = True) -> list[str]:
    script = Path(sys.executable).parent / "runtrace"
    base = (
        [str(script)] if script.exists() else [sys.executable, "-c", "from runtrace.cli import main; main()"]
    )
    return (["taskset", "-c", "0"] if pinned and shutil.which("taskset") else []) + base


def _corpus_files(directory: Path) -> list[Path]:
    """An evenly spaced, deterministic subset of the emulatable corpus members (no .NET, no drivers)."""
    rows = list(csv.DictReader((SHARED / "capa-testfiles.csv").read_text().splitlines()))
    usable = [r for r in rows if r["dotnet"] == "no" and r["kind"] in ("exe", "dll")]
    step = max(len(usable) // N_CORPUS_FILES, 1)
    chosen = usable[::step][:N_CORPUS_FILES]
    paths = []
    with zipfile.ZipFile(SHARED / "capa-testfiles.zip") as archive:
        archive.setpassword(b"infected")
        for r in chosen:
            path = directory / f"{r['sha256']}.{r['kind']}"
            path.write_bytes(archive.read(f"{r['sha256']}.bin"))
            paths.append(path)
    return paths


def _model(directory: Path) -> tuple[Path, str]:
    from runtrace.paths import default_model_dir

    default = default_model_dir()
    if (default / "config.json").exists():
        return default, "the default model"
    from runtrace.scan.synthetic import train_tiny_model

    out = directory / "model"
    train_tiny_model(out, representation="bsm", epochs=1, small=False)
    return out, "default-size BSM model with synthetic weights (no default model installed)"


def _scan(args: list[str], pinned: bool = True) -> tuple[float, dict | None, int]:
    started = time.perf_counter()
    done = subprocess.run([*_command(pinned), "scan", "--json", *args], capture_output=True, text=True,
                          timeout=PROCESS_TIMEOUT_S * 4, cwd=ROOT)  # fmt: skip
    elapsed = time.perf_counter() - started
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = None
    return elapsed, report, done.returncode


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def _compile_package() -> None:
    """Byte-compile runtrace as an installed package is (pip compiles wheels at install; an editable
    install compiles on first run).  Without this, a machine with PYTHONDONTWRITEBYTECODE set (CI images
    often are) would measure compiling runtrace's sources in every process, about 0.15 s."""
    import compileall

    import runtrace

    compileall.compile_dir(Path(runtrace.__file__).parent, quiet=1)


def run() -> dict:
    _compile_package()
    work = Path(tempfile.mkdtemp(prefix="runtrace-scan-bench-"))
    try:
        if (SHARED / "capa-testfiles.zip").exists():
            samples_dir = work / "samples"
            samples_dir.mkdir()
            files, corpus = _corpus_files(samples_dir), f"{N_CORPUS_FILES} capa test files"
        else:
            files = sorted(p for p in FIXTURES.glob("cli-*.exe") if "arm64" not in p.name)
            corpus = "bundled benign fixtures (../shared absent)"
        model, model_note = _model(work)
        model_args = ["--model", str(model)]

        floor = min(_scan(["--schema"])[0] for _ in range(3))  # start-up and imports only
        rows, times = [], []
        stages = {"trace_s": [], "score_s": [], "explain_s": []}
        for path in files:
            elapsed, report, code = _scan([*model_args, str(path)])
            times.append(elapsed)
            result = (report or {}).get("results", [{}])[0]
            trace = result.get("trace") or {}
            for key in stages:
                if result.get("timing"):
                    stages[key].append(result["timing"][key])
            rows.append({
                "file": path.name[:12], "seconds": round(elapsed, 3), "exit": code,
                "verdict": result.get("verdict") or result.get("status", "?"),
                "instructions": trace.get("instructions", ""), "stop": trace.get("stop_reason", ""),
                "trace_s": (result.get("timing") or {}).get("trace_s", ""),
                "score_s": (result.get("timing") or {}).get("score_s", ""),
                "explain_s": (result.get("timing") or {}).get("explain_s", ""),
            })  # fmt: skip

        started = time.perf_counter()
        # Not pinned: two tracer workers need two cores.
        _, batch_report, _ = _scan([*model_args, "--workers", "2", *map(str, files)], pinned=False)
        batch_s = time.perf_counter() - started
        return {
            "files": f"{len(files)} ({corpus})",
            "model": model_note,
            "command": f"{' '.join(_command())} scan --json FILE (one process per file)",
            "median_s": round(statistics.median(times), 3),
            "p95_s": round(_p95(times), 3),
            "max_s": round(max(times), 3),
            "process_floor_s": f"{floor:.3f} (`runtrace scan --schema`: start-up and imports, no work)",
            "median_stage_s": ", ".join(
                f"{k[:-2]} {statistics.median(v):.3f}" for k, v in stages.items() if v
            ),
            "batch_2_workers": (
                f"{len(files) / batch_s:.2f} files/s ({len(files)} files in {batch_s:.1f} s: one "
                f"`runtrace scan --workers 2` process, not pinned; {'ok' if batch_report else 'no report'})"
            ),
            "rows": rows,
            "notes": [
                "One core per scan process (taskset -c 0); the tracer's limits are the defaults "
                f"({_LIMITS.max_instructions:,} instructions, {_LIMITS.timeout_s:g} s), so programs that run "
                "to the instruction cap dominate p95.",
                BEFORE_AFTER_ONNX,
            ],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
