"""Building the similarity index from traced files, and measuring how well neighbours name a family."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from runtrace.similar.index import SimilarityIndex
from runtrace.similar.signature import signature_of
from runtrace.trace.errors import TraceReadError
from runtrace.trace.formats.native import load_trace

# What each indexed file carries into a neighbour's description (the manifest's columns, where present).
ENTRY_FIELDS = (
    "sha256",
    "label",
    "family",
    "family_kind",
    "origin_group",
    "source",
    "file_name",
    "arch",
    "kind",
)


def build_index(
    rows: Iterable[dict], on_done: Callable[[], None] | None = None
) -> tuple[SimilarityIndex, list[str]]:
    """The index of the rows' traces (a manifest's rows with `trace_path`); returns it and one line
    per trace that could not be read (the build goes on without it)."""
    entries, signatures, problems = [], [], []
    for row in rows:
        path = row.get("trace_path")
        if path:
            try:
                signatures.append(signature_of(load_trace(Path(path))))
                entries.append({f: row.get(f) or "" for f in ENTRY_FIELDS})
            except (TraceReadError, OSError, ValueError) as e:
                problems.append(f"{path}: {e}")
        if on_done:
            on_done()
    return SimilarityIndex.build(entries, signatures), problems


def family_attribution(index: SimilarityIndex, k: int = 5) -> dict:
    """Leave one file out: for every malicious file whose family has another member in the index, is
    the nearest neighbour of that family (top-1), or one of the k nearest (top-k)?  A file without
    neighbours counts as a miss."""
    families = Counter(e["family"] for e in index.entries if e["label"] == "malicious" and e["family"])
    top1 = topk = asked = 0
    per_family: dict[str, list[bool]] = defaultdict(list)
    for i, entry in enumerate(index.entries):
        family = entry["family"]
        if entry["label"] != "malicious" or not family or families[family] < 2:
            continue
        asked += 1
        found = [n.entry["family"] for n in index.nearest(index.signature(i), k, exclude=entry["sha256"])]
        hit = bool(found) and found[0] == family
        top1 += hit
        topk += family in found
        per_family[family].append(hit)
    # Per family too: one large family (APT1 is a third of the second archive) must not make the figure.
    macro = sum(sum(h) / len(h) for h in per_family.values()) / len(per_family) if per_family else 0.0
    return {"files": asked, "families": len(per_family),
            "top1": top1 / asked if asked else 0.0, f"top{k}": topk / asked if asked else 0.0,
            "top1_per_family_mean": macro}  # fmt: skip


def unseen_families(index: SimilarityIndex) -> dict:
    """Hold each malware family out of the index in turn: how often is a held-out file's nearest
    remaining neighbour malicious, and how often does it have a neighbour at all?"""
    members = defaultdict(list)
    for i, e in enumerate(index.entries):
        if e["label"] == "malicious" and e["family"]:
            members[e["family"]].append(i)
    with_neighbour = malicious_neighbour = asked = 0
    for ids in members.values():
        allowed = np.ones(len(index), dtype=bool)
        allowed[ids] = False
        for i in ids:
            asked += 1
            found = index.nearest(index.signature(i), 1, allowed=allowed)
            if found:
                with_neighbour += 1
                malicious_neighbour += found[0].entry["label"] == "malicious"
    return {
        "files": asked,
        "families": len(members),
        "with_neighbour": with_neighbour / asked if asked else 0.0,
        "neighbour_malicious": malicious_neighbour / with_neighbour if with_neighbour else 0.0,
    }
