"""Matched training sets: benign files drawn to look, from the outside, like the malware.

A detector trained on all benign files learns the era and toolchain (docs/corpus.md).  `match_rows`
draws, for each malicious file, up to `ratio` benign files of the same architecture, kind (EXE/DLL),
toolchain and linker-version era, nearest in size (within `size_caliper` powers of two).  The benign
class then has the malware's distribution over those traits by construction.  Malware with no benign
look-alike is left out, and counted: a matched set trades coverage for a shortcut-free comparison.

Partners are not kept together in cross-validation (unlike the pairs of `build.mark_matched_subset`):
they come from different origin groups, and joining them would chain the set into a few giant groups.
The groups stay the manifest's `cv_group` (origin and code).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

STRATUM = ("arch", "kind", "compiler", "linker_era")
SIZE_CALIPER = 1.0  # log2 units: partners at most twice or half the size
MAX_PER_GROUP = 25  # benign partners from one CV group, so a big project cannot fill a stratum


def linker_era(row: dict) -> str:
    """Toolchain generation from the linker version: MSVC's majors are its releases (6 = VC6, 7 = 2002/03,
    8 = 2005, 9 = 2008, 10 = 2010, 11/12 = 2012/13, 14.0 = 2015, 14.1x = 2017, 14.2x = 2019, 14.3+ =
    2022); other linkers (GNU ld 2.x, Borland 2.25) keep their major version."""
    major, minor = int(row.get("linker_major") or 0), int(row.get("linker_minor") or 0)
    if major != 14:
        return str(major)
    if minor < 10:
        return "14.0"
    return f"14.{min(minor // 10, 3)}x"


def toolchain_of(row: dict) -> str:
    """The compiler, with Visual C++ split at 2017 (link 14.10) into "msvc" (6.0 to 2015, the malware's
    era) and "msvc-2017+": what the corpus's composition caps and size figures count by."""
    if row.get("compiler") == "msvc":
        version = (int(row.get("linker_major") or 0), int(row.get("linker_minor") or 0))
        return "msvc-2017+" if version >= (14, 10) else "msvc"
    return row.get("compiler") or "unknown"


def stratum(row: dict) -> tuple:
    return (row.get("arch"), row.get("kind"), row.get("compiler"), linker_era(row))


def _log_size(row: dict) -> float:
    return math.log2(max(1, int(row.get("size") or 1)))


def _tiebreak(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


@dataclass
class MatchResult:
    rows: list[dict]  # the malware kept and their benign partners
    unmatched: Counter = field(default_factory=Counter)  # stratum -> malware files without a partner
    partners: int = 0

    @property
    def n_malicious(self) -> int:
        return sum(r["label"] == "malicious" for r in self.rows)


def match_rows(
    rows: list[dict],
    ratio: int = 1,
    size_caliper: float = SIZE_CALIPER,
    max_per_group: int = MAX_PER_GROUP,
    seed: int = 0,
) -> MatchResult:
    """Malware plus up to `ratio` benign partners each; malware without any partner is left out."""
    mal_by: dict[tuple, list[dict]] = defaultdict(list)
    ben_by: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        (mal_by if row["label"] == "malicious" else ben_by)[stratum(row)].append(row)
    used_per_group: Counter = Counter()
    kept: list[dict] = []
    result = MatchResult(kept)
    for key in sorted(mal_by, key=str):
        # Each round gives every malware file in the stratum one more partner, so a scarce stratum
        # spreads its benign files over its malware instead of giving the first ones all of them.
        malware = sorted(mal_by[key], key=lambda r: _tiebreak(str(seed), r["sha256"]))
        pool = sorted(ben_by.get(key, []), key=_log_size)
        taken: set[str] = set()
        got: dict[str, list[dict]] = {r["sha256"]: [] for r in malware}
        for _ in range(ratio):
            for m in malware:
                best = _nearest(m, pool, taken, used_per_group, size_caliper, max_per_group, seed)
                if best is not None:
                    taken.add(best["sha256"])
                    used_per_group[_group(best)] += 1
                    got[m["sha256"]].append(best)
        for m in malware:
            if got[m["sha256"]]:
                kept.append(m)
                kept.extend(got[m["sha256"]])
                result.partners += len(got[m["sha256"]])
            else:
                result.unmatched[key] += 1
    return result


@dataclass
class MatchedManifest:
    """The manifest rows `dataset build --match` builds from, and the account of the draw that the
    dataset records (`meta["match"]`, read back by `corpus audit --dataset`)."""

    table: pa.Table
    info: dict  # ratio, malicious, benign, unmatched: [[*stratum, files], ...] largest first

    @property
    def malicious(self) -> int:
        return self.info["malicious"]

    @property
    def benign(self) -> int:
        return self.info["benign"]

    @property
    def unmatched(self) -> int:
        """Malware files left out for want of a look-alike."""
        return sum(n for *_, n in self.info["unmatched"])


def matched_manifest(table: pa.Table, min_instructions: int = 0, ratio: int = 1) -> MatchedManifest:
    """The rows `--match` keeps: malicious and benign files traced long enough to enter a dataset, then
    the malware and its benign partners drawn by `match_rows`.  ValueError (one line) when no malware
    file has a traced benign look-alike."""
    rows = [
        r
        for r in table.to_pylist()
        if (r.get("label") or "") in ("malicious", "benign")
        and r.get("trace_status") == "ok"
        and (r.get("instruction_count") or 0) >= min_instructions
    ]
    result = match_rows(rows, ratio=ratio)
    if not result.rows:
        raise ValueError("--match: no malicious file has a traced benign look-alike")
    info = {
        "ratio": ratio,
        "malicious": result.n_malicious,
        "benign": result.partners,
        "unmatched": [[*map(str, k), n] for k, n in result.unmatched.most_common()],
    }
    return MatchedManifest(pa.Table.from_pylist(result.rows, schema=table.schema), info)


def stratum_weights(strata: list[tuple], labels: np.ndarray) -> np.ndarray:
    """Matching by weighting: a weight per file such that in every stratum (`stratum`) the malicious and
    the benign files weigh the same, half the stratum's file count each.  Files of a stratum with one class
    only weigh 0: they can teach nothing but the packaging.  Where `match_rows` drops the benign files
    beyond one partner per malware file, this keeps them all, each worth less."""
    labels = np.asarray(labels)
    counts = Counter(zip(strata, labels.tolist(), strict=True))
    weights = np.zeros(len(labels))
    for i, (key, label) in enumerate(zip(strata, labels.tolist(), strict=True)):
        malicious, benign = counts[(key, 1)], counts[(key, 0)]
        if malicious and benign:
            weights[i] = (malicious + benign) / (2 * counts[(key, label)])
    return weights


def _group(row: dict) -> str:
    return row.get("cv_group") or row.get("origin_group") or row["sha256"]


def _nearest(m, pool, taken, used_per_group, caliper, max_per_group, seed) -> dict | None:
    target = _log_size(m)
    best, best_key = None, None
    for b in pool:
        gap = abs(_log_size(b) - target)
        if gap > caliper or b["sha256"] in taken or used_per_group[_group(b)] >= max_per_group:
            continue
        key = (gap, _tiebreak(str(seed), m["sha256"], b["sha256"]))
        if best_key is None or key < best_key:
            best, best_key = b, key
    return best


def match_pool(rows: list[dict], size_caliper: float = SIZE_CALIPER, first_ratio: int = 3) -> list[dict]:
    """The malware and every benign file `match_rows` could draw for it (same stratum, size within the
    caliper of some malicious file): what to trace first when tracing everything takes too long.

    Ordered by priority: the malware, then the partners a draw of `first_ratio` per malicious file
    picks (spares for partners whose trace turns out too short), then the rest of the pool."""
    sizes: dict[tuple, list[float]] = defaultdict(list)
    for row in rows:
        if row["label"] == "malicious":
            sizes[stratum(row)].append(_log_size(row))
    pool = [
        r
        for r in rows
        if r["label"] == "malicious"
        or any(abs(_log_size(r) - s) <= size_caliper for s in sizes.get(stratum(r), ()))
    ]
    first = {r["sha256"] for r in match_rows(pool, ratio=first_ratio, size_caliper=size_caliper).rows}
    return sorted(pool, key=lambda r: (r["label"] != "malicious", r["sha256"] not in first))


def unmatched_markdown(result: MatchResult) -> str:
    lines = ["| arch | kind | toolchain | linker era | malware left out |", "|---|---|---|---|---:|"]
    for key, n in result.unmatched.most_common():
        lines.append("| " + " | ".join(str(k) for k in key) + f" | {n} |")
    return "\n".join(lines)
