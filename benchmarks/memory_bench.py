"""The scanning process's own memory as the input grows: it must stay flat, not follow the input.

One `runtrace scan DIR --json --explain 0` process per step over a directory that grows from 0.25 GiB
to more than 5 GiB.  The directory holds the benign test programs (traced and judged at every step) and
a growing number of 200 MiB junk files: sparse files behind a short text header, so they cost no disk
yet every byte of them is read and hashed by the scanner as a real file's would be (each is under the
default 256 MiB size limit, so none is skipped), and a tracer child is started for each one.

Reported per step: the scanner process's peak resident memory (`ru_maxrss` of the process itself; its
tracer children are separate processes with their own cap), the wall time, and the peak divided by the
peak of the first step in the same run.  The files live in a temporary directory, removed afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ROOT / "tests" / "fixtures" / "benign"
JUNK_MIB = 200
STEPS_GIB = (0.25, 1.0, 2.5, 5.25)
TIMEOUT_S = 900

# Runs the command in this interpreter and reports the process's own peak RSS (children excluded).
_PROBE = """
import json, resource, sys
import runtrace.cli  # registers every command
from runtrace.cli.app import app
out = sys.argv[1]
sys.argv = ["runtrace", *sys.argv[2:]]
try:
    app()  # not runtrace.cli.main, which leaves with os._exit before a finally clause could run
finally:
    with open(out, "w") as fh:
        json.dump({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}, fh)
"""


def _junk(path: Path, index: int) -> None:
    with open(path, "wb") as fh:
        fh.write(f"junk file {index}: not a program\n".encode())
        fh.truncate(JUNK_MIB * 1024 * 1024)


def _scan(folder: Path, probe_out: Path) -> tuple[dict, float]:
    command = [sys.executable, "-c", _PROBE, str(probe_out), "scan", str(folder), "--json", "--explain", "0"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    wall = time.perf_counter() - started
    report = json.loads(done.stdout)
    return report, wall


def run() -> dict:
    programs = sorted(p for p in PROGRAMS.iterdir() if p.suffix in (".exe", ".dll", ".pyd"))
    rows = []
    first_peak = None
    with tempfile.TemporaryDirectory(prefix="runtrace-memory-bench-") as tmp:
        folder = Path(tmp) / "input"
        folder.mkdir()
        for program in programs:
            shutil.copy(program, folder / program.name)
        n_junk = 0
        for step, gib in enumerate(STEPS_GIB):
            while sum(p.stat().st_size for p in folder.iterdir()) < gib * 1024**3:
                _junk(folder / f"junk-{n_junk:03d}.bin", n_junk)
                n_junk += 1
            size = sum(p.stat().st_size for p in folder.iterdir())
            probe_out = Path(tmp) / f"probe-{step}.json"
            report, wall = _scan(folder, probe_out)
            peak_mib = json.loads(probe_out.read_text())["maxrss_kib"] / 1024
            first_peak = first_peak or peak_mib
            results = report["results"]
            judged = sum(r["status"] == "ok" and r["verdict"] is not None for r in results)
            cap_errors = sum("memory cap" in (r["reason"] or "") for r in results)
            rows.append(
                {
                    "input": f"{size / 1024**3:.2f} GiB",
                    "files": len(results),
                    "programs judged": f"{judged} of {len(programs)}",
                    "memory-cap errors": cap_errors,
                    "scanner peak RSS": f"{peak_mib:.0f} MiB",
                    "peak / first step": f"{peak_mib / first_peak:.2f}",
                    "wall": f"{wall:.1f} s",
                }
            )
    return {
        "command": "runtrace scan DIR --json --explain 0 (one process per step, default workers and limits)",
        "input": f"{len(programs)} benign test programs plus {JUNK_MIB} MiB sparse junk files (non-PE)",
        "rows": rows,
        "notes": [
            "Programs judged: the ARM64 test program is refused by design (only i386 and amd64 are "
            "emulated), so 3 of 4 is all of them.",
            "For comparison, measured once on 2026-12-02 (not rerun by `make bench`): the code before "
            "inputs were streamed (commit 06b2274) scanning the same 4 programs beside 6 junk files "
            "(1.17 GiB) peaked at 1,274 MiB in the scanner process, and all three x86/x64 programs got "
            '"tracer process passed the memory cap of 1024 MiB and was killed": every input was held '
            "in the parent and each forked child's resident size counted it. This code: 86 MiB, three "
            "verdicts.",
            "Also measured once on 2026-12-02: one `runtrace scan DIR capa-testfiles.zip --password "
            "infected --json --explain 0 --workers 2` over 683 files, 1.21 GiB (320 junk files of 3.5 MiB "
            "beside the 363 capa test programs, read from the zip): the scanner peaked at 179 MiB; 330 "
            "programs got a verdict; the 33 errors were 26 .NET assemblies and 5 drivers (refused by "
            "design) and 2 programs that passed the 1 GiB cap (2.1 and over 3 GiB of private memory when "
            "traced alone). Neither needed the memory (docs/tracer.md, revision 10): at tracer revision "
            "10 they trace in 75 and 60 MiB, and `runtrace trace capa-testfiles.zip --password infected "
            "--workers 2` traced 332 programs with no memory-cap error (the other 31 are the .NET "
            "assemblies and drivers; largest tracer child 126 MiB resident; 845 s on a shared 2-core "
            "machine).",
        ],
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
