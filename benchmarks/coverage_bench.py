"""How far emulation gets, for malware and for benign programs, at default tracer settings.

Malicious: the native user-mode samples of ../shared/samples/capa-testfiles.zip (not .NET, not drivers).
Benign: a fixed, seeded selection from the corpus manifest (`runtrace corpus build`): Wine's programs and
DLLs from Debian's libwine (i386 and amd64) and files from PyPI Windows wheels, EXEs and DLLs of both.
Traces are cached (resumable), so a rerun only traces what is new.
"""

from __future__ import annotations

import csv
import random
import statistics
from collections import Counter
from pathlib import Path

from runtrace.trace.emulate.batch import trace_batch
from runtrace.trace.emulate.emulator import TracerSettings
from runtrace.trace.emulate.inputs import Sample, iter_samples

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
CACHE = Path.home() / ".cache" / "runtrace"
MANIFEST = CACHE / "corpus" / "manifest.parquet"
BENIGN_PER_SOURCE = 100  # debian and pypi each, half EXEs where there are enough
THRESHOLD = 1000


def _malicious() -> list[Sample]:
    rows = list(csv.DictReader((SHARED / "capa-testfiles.csv").read_text().splitlines()))
    keep = {
        r["sha256"]
        for r in rows
        if r["label"] == "malicious" and r["dotnet"] == "no" and r["kind"] != "driver"
    }
    return [s for s in iter_samples([SHARED / "capa-testfiles.zip"], "infected")
            if isinstance(s, Sample) and s.sha256 in keep]  # fmt: skip


def _benign() -> list[Sample]:
    import pyarrow.parquet as pq

    rows = [r for r in pq.read_table(MANIFEST).to_pylist()
            if r["label"] == "benign" and r["source"] in ("debian", "pypi") and not r["is_dotnet"]
            and r["kind"] in ("exe", "dll") and r["storage"] == "store"]  # fmt: skip
    rng = random.Random(1)
    chosen = []
    for source in ("debian", "pypi"):
        for kind in ("exe", "dll"):
            pool = sorted(
                (r for r in rows if r["source"] == source and r["kind"] == kind), key=lambda r: r["sha256"]
            )
            chosen += rng.sample(pool, min(len(pool), BENIGN_PER_SOURCE // 2))
    return [
        Sample(r["sha256"], f"{r['origin_group']}/{r['file_name']}", r["path"], size=r["size"] or 0)
        for r in chosen
    ]


def _figures(label: str, outcomes) -> dict:
    traced = [o for o in outcomes if o.status in ("ok", "skipped")]
    reasons = Counter(
        o.stop_reason if o.status != "error" else f"error: {o.stop_reason or 'other'}" for o in outcomes
    )
    long_enough = sum(o.instruction_count >= THRESHOLD for o in traced)
    return {
        "class": label,
        "samples": len(outcomes),
        f">= {THRESHOLD} instructions": f"{long_enough} ({100 * long_enough / max(len(outcomes), 1):.1f} %)",
        "median instructions": int(statistics.median(o.instruction_count for o in traced)) if traced else 0,
        "median wall s": round(statistics.median(o.wall_time_s for o in traced), 2) if traced else 0,
        "max peak RSS MiB": round(max((o.peak_rss_mb for o in traced), default=0)),
        "stop reasons": ", ".join(f"{k} {v}" for k, v in reasons.most_common()),
    }


def run() -> dict:
    if not (SHARED / "capa-testfiles.zip").exists():
        return {"skipped": "../shared/samples not present"}
    # Its own trace folder: the corpus traces may be made with other settings (`corpus trace --timeout`).
    settings, traces = TracerSettings(), CACHE / "bench" / "coverage-traces"
    rows = [_figures("malicious", trace_batch(_malicious(), traces, settings, workers=2))]
    if MANIFEST.exists():
        rows.append(_figures("benign", trace_batch(_benign(), traces, settings, workers=2)))
    notes = (
        [] if MANIFEST.exists() else ["Benign figures need the corpus: run `runtrace corpus build` first."]
    )
    return {"settings": str(settings.key()), "rows": rows, "notes": notes}
