"""The similarity index at scale: size on disk, load time and query time for 10k, 100k and 1M entries.

The corpus holds thousands of traced programs; a larger index is synthetic: signatures in clusters of
near-copies (a known program and its variants, each position of a variant's signature agreeing with its
cluster's with probability 0.3-0.95, as MinHash signatures of sets with that Jaccard similarity do), and
every cluster built on one of 50 runtimes whose code it shares at Jaccard ~0.15 (start-up and library
code that thousands of unrelated programs run), so a query also draws the band collisions of unrelated
programs that real ones do.  Each query is a fresh variant of a random cluster.  Queries run on one core.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from runtrace.similar.index import SimilarityIndex
from runtrace.similar.signature import NUM_PERM, CodeSignature

SIZES = (10_000, 100_000, 1_000_000)
CLUSTER = 20  # files per cluster
RUNTIMES = 50
RUNTIME_SHARE = 0.15
QUERIES = 200


def _random(rng, rows: int) -> np.ndarray:
    return rng.integers(0, 2**32, size=(rows, NUM_PERM), dtype=np.uint64).astype(np.uint32)


def _variants(rng, centres: np.ndarray, which: np.ndarray) -> np.ndarray:
    similarity = rng.uniform(0.3, 0.95, size=(len(which), 1))
    keep = rng.random((len(which), NUM_PERM)) < similarity
    return np.where(keep, centres[which], _random(rng, len(which)))


def _one(n: int, rng) -> dict:
    runtimes = _random(rng, RUNTIMES)
    runtime_of = rng.integers(0, RUNTIMES, n // CLUSTER)
    shared = rng.random((n // CLUSTER, NUM_PERM)) < RUNTIME_SHARE
    centres = np.where(shared, runtimes[runtime_of], _random(rng, n // CLUSTER))
    members = np.repeat(np.arange(len(centres)), CLUSTER)[:n]
    signatures = _variants(rng, centres, members)
    sizes = np.column_stack([rng.integers(50, 5000, n), rng.integers(10, 500, n)])
    entries = [{"sha256": f"{i:064x}", "label": "malicious" if i % 2 else "benign"} for i in range(n)]
    started = time.perf_counter()
    index = SimilarityIndex(entries, signatures, signatures, sizes)
    build_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="runtrace-similar-bench-") as tmp:
        index.save(tmp)
        size_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20
        del index
        started = time.perf_counter()
        index = SimilarityIndex.load(tmp)
        load_s = time.perf_counter() - started
    times, found, candidates = [], [], []
    for c in rng.integers(0, len(centres), QUERIES):
        blocks = _variants(rng, centres, np.array([c]))[0]
        query = CodeSignature(blocks, 1000, blocks, 100)
        started = time.perf_counter()
        neighbours = index.nearest(query, k=5)
        times.append(time.perf_counter() - started)
        found.append(len(neighbours))
        candidates.append(len(index.candidates(query)))
    times.sort()
    return {
        "entries": n,
        "index_MiB": round(size_mb, 1),
        "build_s": round(build_s, 2),
        "load_s": round(load_s, 2),
        "query_median_ms": round(1000 * statistics.median(times), 2),
        "query_p95_ms": round(1000 * times[int(0.95 * len(times))], 2),
        "candidates_median": int(statistics.median(candidates)),
        "neighbours_found_median": int(statistics.median(found)),
    }


def run(sizes=SIZES) -> dict:
    rng = np.random.default_rng(26)
    rows = [_one(n, rng) for n in sizes]
    return {"query_p95_ms_at_largest": rows[-1]["query_p95_ms"], "rows": rows}


if __name__ == "__main__":
    print(run((10_000, 100_000)))
