"""The nearest known programs by executed code: beside each verdict in `scan` and `serve`, and on their
own in `runtrace similar` (`NeighbourFinder`).

The index (`runtrace.similar.index`) is loaded once per scanner or finder (a service worker holds one),
and a query signs the trace with the index's own permutations, without importing datasketch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from runtrace.paths import default_model_dir
from runtrace.scan.runner import RunOptions, TraceRunner
from runtrace.scan.schema import (
    IndexInfo,
    KnownFile,
    Neighbours,
    SimilarReport,
    SimilarResult,
    SimilarSummary,
)
from runtrace.similar.index import IndexFileError, SimilarityIndex
from runtrace.trace.model import Trace

DEFAULT_NEIGHBOURS = 5
INDEX_DIR = "similar"  # the index's folder inside a model directory
ERRORS, INTERRUPTED = 2, 130


def default_index_dir(model_dir: Path | None = None) -> Path:
    """Where a model keeps its index (the bundled model's, by default)."""
    return (model_dir or default_model_dir()) / INDEX_DIR


def load_index(directory: Path) -> SimilarityIndex:
    """The index in `directory`; IndexFileError (one line naming it) when it cannot be used."""
    if not (directory / "index.json").exists():
        raise IndexFileError(f"{directory}: no similarity index (`runtrace corpus index` builds one)")
    return SimilarityIndex.load(directory)


def index_info(index: SimilarityIndex) -> IndexInfo:
    labels = Counter(e.get("label") for e in index.entries)
    families = {e.get("family") for e in index.entries if e.get("label") == "malicious" and e.get("family")}
    return IndexInfo(
        path=index.path,
        sha256=index.digest,
        entries=len(index),
        malicious=labels.get("malicious", 0),
        benign=labels.get("benign", 0),
        families=len(families),
        num_perm=index.signatures.shape[1],
        threshold=index.threshold,
    )


def find_neighbours(
    index: SimilarityIndex, trace: Trace, k: int, verdict: str | None = None, sha256: str | None = None
) -> Neighbours:
    """The k known files most alike `trace`, and whether most of them disagree with `verdict` (the
    model's, when there is one); a known file with the input's `sha256` or the trace's sample sha256 is
    marked as the input itself."""
    signature = index.sign(trace)
    found = index.nearest(signature, k)
    itself = {h.lower() for h in (sha256, trace.meta.sha256) if h}
    nearest = [
        KnownFile(
            sha256=n.entry.get("sha256") or "",
            label=n.entry.get("label") or "",
            family=n.entry.get("family") or None,
            origin=n.entry.get("origin_group") or None,
            source=n.entry.get("source") or None,
            file_name=n.entry.get("file_name") or None,
            jaccard=n.jaccard,
            shared_blocks=int(n.shared_blocks),
            api_jaccard=n.api_jaccard,
            same_file=(n.entry.get("sha256") or "").lower() in itself,
        )
        for n in found
    ]
    counts = Counter(f.label for f in nearest)
    majority = next((label for label, n in counts.items() if 2 * n > len(nearest)), None)
    majority = majority if majority in ("malicious", "benign") else None
    disagrees = majority is not None and verdict in ("malicious", "benign") and verdict != majority
    note = None
    if disagrees or (majority is not None and verdict == "unknown"):
        said = "the model says " + verdict if disagrees else "the model did not judge it"
        closest = nearest[0]
        what = closest.family or closest.origin or closest.sha256[:12]
        note = (
            f"{said}, but {counts[majority]} of the {len(nearest)} nearest known files by executed code "
            f"are {majority} (closest: {closest.label} {what}, Jaccard {closest.jaccard:.2f})"
        )
    return Neighbours(
        k=k,
        blocks=signature.n_blocks,
        nearest=nearest,
        malicious=counts.get("malicious", 0),
        benign=counts.get("benign", 0),
        majority=majority,
        disagrees=disagrees,
        note=note,
    )


@dataclass
class NeighbourFinder(TraceRunner[SimilarResult]):
    """`runtrace similar`: the nearest known files for each input, traced as `scan` traces it."""

    index: SimilarityIndex
    k: int = DEFAULT_NEIGHBOURS
    options: RunOptions = field(default_factory=RunOptions)
    step = "matching"

    def analyse_trace(
        self, trace: Trace, name: str, sha256: str | None, input_kind: str, trace_s: float = 0.0
    ) -> SimilarResult:
        neighbours = find_neighbours(self.index, trace, self.k, sha256=sha256)
        return SimilarResult(
            name=name,
            sha256=sha256,
            input_kind=input_kind,
            status="ok",
            reason=None,
            traced_sample_sha256=trace.meta.sha256 or None,
            instructions=trace.instruction_count,
            neighbours=neighbours,
        )

    def error_result(self, name: str, message: str, sha256: str | None = None, input_kind: str = "unknown"):
        return SimilarResult(
            name=name,
            sha256=sha256,
            input_kind=input_kind,
            status="error",
            reason=" ".join(message.split()),
            traced_sample_sha256=None,
            instructions=None,
            neighbours=None,
        )

    def report(self, results: list[SimilarResult], inputs: int, interrupted: bool = False) -> SimilarReport:
        ok = [r for r in results if r.status == "ok"]
        found = sum(bool(r.neighbours.nearest) for r in ok)
        errors = len(results) - len(ok)
        return SimilarReport(
            index=index_info(self.index),
            inputs=inputs,
            results=results,
            summary=SimilarSummary(
                files=len(results), with_neighbours=found, without_neighbours=len(ok) - found, errors=errors
            ),
            exit_code=INTERRUPTED if interrupted else ERRORS if errors else 0,
        )
