"""Which traces a dataset is built from: the corpus manifest's labelled rows that have a trace, and a key
that says whether an existing dataset was built from exactly these (`runtrace dataset build` does
nothing when it was).  The manifest is read as a plain table: this module needs nothing from `corpus`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

LABELS = ("malicious", "benign")


class ManifestColumnsError(ValueError):
    """The manifest lacks a column a dataset needs (one line)."""


@dataclass
class LabelledTraces:
    paths: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # origin group (the file's own sha256 when unknown)
    kinds: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=lambda: {"not malicious/benign": 0, "no trace": 0})

    def head(self, n: int | None) -> LabelledTraces:
        """The first n traces (all when n is None)."""
        if n is None:
            return self
        return LabelledTraces(self.paths[:n], self.labels[:n], self.groups[:n], self.kinds[:n], self.skipped)

    def inputs_key(self, **settings) -> str:
        """Hash of what a dataset is built from: each trace file (path, size, modification time), its
        label, group and kind, and the build settings."""
        traces = []
        for path, label, group, kind in zip(self.paths, self.labels, self.groups, self.kinds, strict=True):
            try:
                stat = path.stat()
                traces.append([str(path), stat.st_size, stat.st_mtime_ns, label, group, kind])
            except OSError:
                traces.append([str(path), None, None, label, group, kind])
        blob = json.dumps({"settings": settings, "traces": traces}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


def labelled_traces(manifest, traces: Path | None) -> LabelledTraces:
    """Trace paths with label, origin group and kind, for the manifest rows (a pyarrow table) that are
    malicious or benign and have a trace (`traces/<sha256>.rtrace`, or the row's `trace_path`)."""
    columns = set(manifest.column_names)
    if "sha256" not in columns or "label" not in columns:
        raise ManifestColumnsError("manifest needs sha256 and label columns")
    # cv_group (origin groups joined by shared code) is what no fold may split; older manifests lack it.
    group_column = next((c for c in ("cv_group", "origin_group", "group") if c in columns), None)
    out = LabelledTraces()
    for row in manifest.to_pylist():
        label = (row.get("label") or "").lower()
        if label not in LABELS:  # grayware and unknowns are neither class
            out.skipped["not malicious/benign"] += 1
            continue
        sha = row["sha256"]
        candidates = []
        if traces is not None:
            candidates.append(traces / f"{sha}.rtrace")
        if row.get("trace_path"):
            candidates.append(Path(row["trace_path"]))
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            out.skipped["no trace"] += 1
            continue
        out.paths.append(found)
        out.labels.append(label)
        out.groups.append((row.get(group_column) if group_column else None) or sha)
        out.kinds.append(row.get("kind") or "")
    return out


def built_from(out: Path) -> str | None:
    """The inputs key of a complete dataset at `out` (its dataset.json is written last), if any."""
    try:
        return json.loads((out / "dataset.json").read_text())["meta"].get("inputs_key")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
