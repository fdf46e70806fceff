"""How far emulation gets, for malware and for benign programs, at default tracer settings.

Malicious: the native user-mode samples of ../shared/samples/capa-testfiles.zip (not .NET, not drivers).
Benign: the 200 files listed in `coverage_benign.csv` beside this module (sha256, source, origin group,
name): Wine's programs and DLLs from Debian's libwine (i386 and amd64) and files from PyPI Windows
wheels, EXEs and DLLs of both.  The list is fixed so that every run measures the same files: a seeded
draw from a rebuilt corpus is not stable (the registries' newest wheels change, and a corpus built on
2026-12-06 drew only 27 of the 64 files an earlier draw had found short).  They are read from the store
of the corpus built from the first corpus's sources (`runtrace corpus build --sources` with
sources.toml as of commit 482ceaa^, `--no-pypi-history`), ~/.cache/runtrace/corpus-v1 by default;
`RUNTRACE_COVERAGE_CORPUS` names another corpus folder.  `python -m benchmarks.coverage_bench --choose`
draws a new list from that corpus's manifest (seeded; only when the set is meant to change).
Traces are cached (resumable), so a rerun only traces what is new.

Figures are given per class, and per class and kind (EXE, DLL, PYD: a DLL exporting `PyInit_*`) and per
class and architecture.  `RUNTRACE_COVERAGE_SUBSET=N` measures a fixed, seeded subset of N files per
class instead (quicker, for iterating on the tracer); the full benchmark is the default.
"""

from __future__ import annotations

import csv
import os
import random
import statistics
from collections import Counter
from pathlib import Path

import pefile

from runtrace.corpus.store import SampleStore
from runtrace.trace.emulate.batch import trace_batch
from runtrace.trace.emulate.emulator import TracerSettings
from runtrace.trace.emulate.inputs import Sample, iter_samples

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
CACHE = Path.home() / ".cache" / "runtrace"
# The corpus whose store holds the listed benign files; RUNTRACE_COVERAGE_CORPUS names another.
CORPUS = Path(os.environ.get("RUNTRACE_COVERAGE_CORPUS", CACHE / "corpus-v1"))
MANIFEST = CORPUS / "manifest.parquet"
BENIGN_LIST = Path(__file__).with_name("coverage_benign.csv")
BENIGN_FIELDS = ("sha256", "source", "origin_group", "file_name", "size")
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


def _choose_benign() -> list[dict]:
    """A seeded draw from the corpus manifest: per source (debian, pypi), half EXEs and half DLLs."""
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
    return [{f: r[f] for f in BENIGN_FIELDS} for r in chosen]


def _benign() -> list[Sample]:
    """The listed benign files, from the corpus store; a file the store lacks is a one-line error."""
    rows = list(csv.DictReader(BENIGN_LIST.read_text().splitlines()))
    # Stored files are found under the corpus folder (the manifest's absolute path is where it was built).
    store = SampleStore(CORPUS)
    missing = [r["sha256"] for r in rows if not store.path_for(r["sha256"]).exists()]
    if missing:
        raise SystemExit(
            f"{CORPUS}: {len(missing)} of the {len(rows)} benign files of {BENIGN_LIST.name} are not in "
            f"this corpus (first {missing[0]}); build the first corpus's sources there (module docstring)"
        )
    return [
        Sample(
            r["sha256"],
            f"{r['origin_group']}/{r['file_name']}",
            str(store.path_for(r["sha256"])),
            size=int(r["size"] or 0),
        )
        for r in rows
    ]


def subset(samples: list[Sample], n: int) -> list[Sample]:
    """A fixed, seeded choice of n samples (all of them when n is 0 or too large)."""
    if not n or n >= len(samples):
        return samples
    return random.Random(16).sample(sorted(samples, key=lambda s: s.sha256), n)


def kind_of(data: bytes) -> str:
    """EXE, DLL or PYD (a DLL that exports `PyInit_<name>`: a Python extension module), from the headers."""
    pe = pefile.PE(data=data, fast_load=True)
    try:
        if not pe.is_dll():
            return "EXE"
        pe.parse_data_directories([pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXPORT"]])
        exports = getattr(pe, "DIRECTORY_ENTRY_EXPORT", None)
        names = [s.name or b"" for s in exports.symbols] if exports else []
        return "PYD" if any(n.startswith(b"PyInit_") for n in names) else "DLL"
    finally:
        pe.close()


def has_code(data: bytes) -> bool:
    """Whether Windows could run anything of the file: an entry point, an export or a TLS callback.
    Type libraries and resource-only DLLs have none and can never execute 1,000 instructions; they
    stay in the figures, and a second row per class leaves them out (docs/benchmarks.md says both)."""
    pe = pefile.PE(data=data, fast_load=True)
    try:
        if pe.OPTIONAL_HEADER.AddressOfEntryPoint:
            return True
        pe.parse_data_directories(
            [
                pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXPORT"],
                pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_TLS"],
            ]
        )
        exports = getattr(pe, "DIRECTORY_ENTRY_EXPORT", None)
        tls = getattr(pe, "DIRECTORY_ENTRY_TLS", None)
        return any(e.address and not e.forwarder for e in (exports.symbols if exports else [])) or bool(
            tls and tls.struct.AddressOfCallBacks
        )
    finally:
        pe.close()


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
        # A trace reused from the cache was not run now: its memory is unknown.
        "max peak RSS MiB": round(max(fresh))
        if (fresh := [o.peak_rss_mb for o in traced if o.status == "ok"])
        else "reused",
        "stop reasons": ", ".join(f"{k} {v}" for k, v in reasons.most_common()),
    }


def _breakdown(label: str, samples: list[Sample], outcomes) -> list[dict]:
    """One row for the class, then one per kind and one per architecture."""
    kinds, with_code = {}, set()
    for s in samples:
        data = s.read()
        kinds[s.sha256] = kind_of(data)
        if has_code(data):
            with_code.add(s.sha256)
    rows = [_figures(label, outcomes)]
    if len(with_code) < len(samples):
        rows.append(_figures(f"{label} with code", [o for o in outcomes if o.sha256 in with_code]))
    for kind in ("EXE", "DLL", "PYD"):
        part = [o for o in outcomes if kinds.get(o.sha256) == kind]
        if part:
            rows.append(_figures(f"{label} {kind}", part))
    for arch in sorted({o.arch for o in outcomes if o.arch}):
        rows.append(_figures(f"{label} {arch}", [o for o in outcomes if o.arch == arch]))
    return rows


def run() -> dict:
    if not (SHARED / "capa-testfiles.zip").exists():
        return {"skipped": "../shared/samples not present"}
    n = int(os.environ.get("RUNTRACE_COVERAGE_SUBSET", "0"))
    # Its own trace folder: the corpus traces may be made with other settings (`corpus trace --timeout`).
    settings, traces = TracerSettings(), CACHE / "bench" / "coverage-traces"
    classes = [("malicious", subset(_malicious(), n))]
    if MANIFEST.exists():
        classes.append(("benign", subset(_benign(), n)))
    rows = []
    for label, samples in classes:
        rows += _breakdown(label, samples, trace_batch(samples, traces, settings, workers=2))
    notes = [] if MANIFEST.exists() else [f"Benign figures need the first corpus's files in {CORPUS}."]
    if n:
        notes.append(f"A seeded subset of at most {n} files per class (RUNTRACE_COVERAGE_SUBSET).")
    return {"settings": str(settings.key()), "rows": rows, "notes": notes}


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--choose"]:
        raise SystemExit("usage: python -m benchmarks.coverage_bench --choose  (writes coverage_benign.csv)")
    with BENIGN_LIST.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=BENIGN_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_choose_benign())
    print(f"wrote {BENIGN_LIST}")
