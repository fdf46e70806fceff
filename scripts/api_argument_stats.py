"""How much `dataset build --api-args` adds on real traces: calls with argument tokens, sequence and lexicon
growth, encoding time, and each token's share of files per class (docs/evaluation.md, "What a sequence
holds").  Reads traces only; nothing is written.

    .venv/bin/python scripts/api_argument_stats.py ~/.cache/runtrace/corpus --per-class 150
"""

from __future__ import annotations

import argparse
import collections
import random
import time
from pathlib import Path

import pyarrow.parquet as pq

from runtrace.represent.apiargs import VOCABULARY, argument_tokens
from runtrace.represent.encode import encode_trace
from runtrace.trace.formats.registry import load_any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path, help="corpus directory: manifest.parquet and traces/")
    parser.add_argument("--per-class", type=int, default=150, help="traces drawn per class")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()

    table = pq.read_table(opts.corpus / "manifest.parquet", columns=["sha256", "label"]).to_pydict()
    label_of = dict(zip(table["sha256"], table["label"], strict=True))
    by_class = collections.defaultdict(list)
    for path in sorted((opts.corpus / "traces").glob("*.rtrace")):
        if label_of.get(path.stem) in ("malicious", "benign"):
            by_class[label_of[path.stem]].append(path)
    rng = random.Random(opts.seed)
    chosen = {k: rng.sample(v, min(opts.per_class, len(v))) for k, v in sorted(by_class.items())}

    calls, with_tokens = collections.Counter(), collections.Counter()
    files_with = {k: collections.Counter() for k in chosen}
    versions = collections.Counter()
    length, lexicon, seconds = [0, 0], [set(), set()], [0.0, 0.0]
    for label, paths in chosen.items():
        for path in paths:
            trace = load_any(path)
            versions[trace.meta.tracer_version] += 1
            seen = set()
            for call in trace.api_calls:
                tokens = argument_tokens(call.name, call.args)
                calls[label] += 1
                with_tokens[label] += bool(tokens)
                seen.update(tokens)
            files_with[label].update(seen)
            encode_trace(trace, "ism", "registers")  # warm the disassembly and normalisation caches
            for k, api_args in enumerate((False, True)):
                started = time.perf_counter()
                enc = encode_trace(trace, "ism", "registers", api_args=api_args)
                seconds[k] += time.perf_counter() - started
                length[k] += len(enc.sequence)
                lexicon[k] |= set(enc.lexicon)

    print(f"tracer revisions: {dict(versions)}")
    for label in chosen:
        share = with_tokens[label] / max(calls[label], 1)
        print(
            f"{label}: {len(chosen[label])} traces, {calls[label]:,} calls, {share:.1%} with argument tokens"
        )
    growth = length[1] / max(length[0], 1) - 1
    print(f"ISM tokens {length[0]:,} -> {length[1]:,} (+{growth:.2%})", end="; ")
    print(f"lexicon {len(lexicon[0]):,} -> {len(lexicon[1]):,}")
    print(f"encoding (warm caches): {seconds[0]:.2f} s without, {seconds[1]:.2f} s with --api-args")
    used = set().union(*files_with.values())
    print(f"tokens occurring: {len(used)} of {len(VOCABULARY)}; share of files with each, per class:")
    for token in sorted(used, key=lambda t: -sum(c[t] for c in files_with.values())):
        shares = "  ".join(f"{k} {files_with[k][token] / len(chosen[k]):6.1%}" for k in chosen)
        print(f"  {token:24s} {shares}")


if __name__ == "__main__":
    main()
