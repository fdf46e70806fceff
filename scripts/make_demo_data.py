"""Build the bundled demo data (src/runtrace/data/demo/) from a traced corpus.

Run once by a maintainer after `runtrace corpus build` and `runtrace corpus trace`; the output is
committed.  It holds only derived data: run traces (`.rtrace`) and a manifest without file paths.
Never a sample binary.

    python scripts/make_demo_data.py [--per-class 60] [--min-instructions 1000]
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from runtrace.trace.formats.native import load_trace

CACHE = Path.home() / ".cache" / "runtrace" / "corpus"
OUT = Path(__file__).resolve().parents[1] / "src" / "runtrace" / "data" / "demo"
KEEP = ["sha256", "label", "source", "package", "origin_group", "file_name", "arch", "kind", "size",
        "compiler", "linker_version", "section_count", "import_count"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--min-instructions", type=int, default=1000)
    ap.add_argument("--scan-samples", type=int, default=5)
    args = ap.parse_args()
    rows = pq.read_table(CACHE / "manifest.parquet").to_pylist()
    traces = CACHE / "traces"
    rng = random.Random(7)
    chosen: dict[str, list[dict]] = {"malicious": [], "benign": []}
    for label in chosen:
        pool = [r for r in rows if r["label"] == label and (traces / f"{r['sha256']}.rtrace").exists()]
        rng.shuffle(pool)
        groups: set[str] = set()
        for r in pool:
            if len(chosen[label]) >= args.per_class or r["origin_group"] in groups:
                continue
            if load_trace(traces / f"{r['sha256']}.rtrace").instruction_count >= args.min_instructions:
                chosen[label].append(r)
                groups.add(r["origin_group"])  # one file per origin group: a varied demo
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "traces").mkdir(parents=True)
    picked = chosen["malicious"] + chosen["benign"]
    for r in picked:
        shutil.copy(traces / f"{r['sha256']}.rtrace", OUT / "traces")
    pq.write_table(
        pa.Table.from_pylist([{k: r.get(k) for k in KEEP} for r in picked]), OUT / "manifest.parquet"
    )
    (OUT / "scan").mkdir()
    for r in chosen["malicious"][: args.scan_samples]:
        shutil.copy(traces / f"{r['sha256']}.rtrace", OUT / "scan")
    print(f"{len(chosen['malicious'])} malicious and {len(chosen['benign'])} benign traces written to {OUT}")


if __name__ == "__main__":
    main()
