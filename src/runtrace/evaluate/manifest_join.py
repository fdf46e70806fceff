"""Bring the corpus manifest's PE metadata next to a dataset's files, matched by sha256.

A dataset records what the trace says (arch, trace length, stop reason); size, linker version, section
and import counts and compiler family live in the corpus manifest.  The shortcut audit needs them, and
per-slice results by compiler family need the `compiler` column.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from runtrace.models.interface import SequenceData


def join_manifest(data: SequenceData, manifest: pa.Table) -> tuple[list[str], int]:
    """Append the manifest's PE and lineage columns that `data.files` lacks; returns (columns added,
    files matched).

    Files absent from the manifest get nulls (unknown), never a default value that could look like a
    real size or count.  Only PE metadata and lineage (family, first seen) are taken: provenance columns
    (paths, archive details) say where a sample came from, and would hand a classifier its label.  The
    lineage columns decide the by-family and temporal splits; no model reads them (the metadata model
    takes a fixed list of PE and trace columns).
    """
    from runtrace.corpus.manifest import LINEAGE_FIELDS, PE_FIELDS

    if "sha256" not in manifest.column_names:
        raise ValueError("the manifest has no sha256 column")
    files = data.files
    take = [
        f.name
        for f in PE_FIELDS + LINEAGE_FIELDS
        if f.name in manifest.column_names and f.name not in files.column_names
    ]
    position = {sha: i for i, sha in enumerate(manifest.column("sha256").to_pylist())}
    rows = [position.get(sha) for sha in files.column("sha256").to_pylist()]
    indices = pa.array(rows, type=pa.int64())  # null index -> null row
    for name in take:
        files = files.append_column(name, manifest.column(name).take(indices))
    data.files = files
    return take, int(np.sum([r is not None for r in rows]))


@dataclass(frozen=True)
class ManifestJoin:
    sha256: str  # of the manifest file, recorded in the report
    matched: list[tuple[str, int, int]]  # per dataset: (name, files found in the manifest, files)


def join_manifest_file(datasets: list[tuple[str, SequenceData]], manifest: Path) -> ManifestJoin:
    """Join the corpus manifest's PE metadata to every dataset (`join_manifest`); ValueError (one line,
    naming the file) when it cannot be read."""
    from runtrace.corpus.manifest import ManifestError, read_manifest

    try:
        table = read_manifest(manifest)
        sha256 = hashlib.sha256(Path(manifest).read_bytes()).hexdigest()
        matched = []
        for name, data in datasets:
            _, found = join_manifest(data, table)
            matched.append((name, found, len(data.labels())))
    except (ManifestError, ValueError) as e:
        # read_manifest's errors already name the file; join_manifest's do not.
        raise ValueError(str(e) if str(e).startswith(f"{manifest}:") else f"{manifest}: {e}") from None
    return ManifestJoin(sha256, matched)
