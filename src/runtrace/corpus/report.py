"""Composition of a corpus: counts by class x arch x kind x compiler, and per-class summaries.

Computed once as plain data, then rendered either as a rich table (terminal) or as Markdown (docs), so the
two can never disagree.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from runtrace.corpus.audit_sets import AuditSets

CLASSES = ("benign", "malicious")


@dataclass(frozen=True)
class ClassSummary:
    label: str
    files: int
    groups: int
    packages: int
    i386_share: float
    exes: int
    dlls: int
    drivers: int
    dotnet: int
    signed: int
    compilers: dict[str, int]
    largest_groups: list[tuple[str, int]]


def composition(rows: list[dict]) -> list[tuple[str, str, str, str, int]]:
    """(label, arch, kind, compiler, count), sorted for reading."""
    counts = Counter((r["label"], r["arch"], r["kind"], r["compiler"]) for r in rows)
    return sorted(((*k, n) for k, n in counts.items()), key=lambda t: (t[0], t[1], t[2], -t[4], t[3]))


def summarize_class(rows: list[dict], label: str) -> ClassSummary:
    mine = [r for r in rows if r["label"] == label]
    n = len(mine)
    groups = Counter(r["origin_group"] for r in mine)
    kinds = Counter(r["kind"] for r in mine)
    return ClassSummary(
        label=label,
        files=n,
        groups=len(groups),
        packages=len({r["package"] for r in mine}),
        i386_share=(sum(r["arch"] == "i386" for r in mine) / n) if n else 0.0,
        exes=kinds["exe"],
        dlls=kinds["dll"],
        drivers=kinds["driver"],
        dotnet=sum(bool(r["is_dotnet"]) for r in mine),
        signed=sum(bool(r["signed"]) for r in mine),
        compilers=dict(Counter(r["compiler"] for r in mine).most_common()),
        largest_groups=groups.most_common(8),
    )


# Issue 24's size figures for the benign side: files, origin groups, share of programs, and share of the
# programs built with Visual C++ 2015 or older (the malware's era).
SIZE_TARGETS = {"files": 5000, "origin groups": 300, "EXE share": 0.40, "VC++ <= 2015 share of EXEs": 1 / 3}


@dataclass(frozen=True)
class SizeFigures:
    files: int
    groups: int
    exes: int
    era_exes: int  # programs Visual C++ 6.0 to 2015 linked (link < 14.10)

    def figures(self) -> list[tuple[str, str, bool]]:
        """(figure, value as written, met)."""
        exe_share = self.exes / self.files if self.files else 0.0
        era_share = self.era_exes / self.exes if self.exes else 0.0
        t = SIZE_TARGETS
        return [
            ("files", f"{self.files:,}", self.files >= t["files"]),
            ("origin groups", f"{self.groups:,}", self.groups >= t["origin groups"]),
            ("EXE share", f"{exe_share:.1%} ({self.exes:,})", exe_share >= t["EXE share"]),
            ("VC++ <= 2015 share of EXEs", f"{era_share:.1%} ({self.era_exes:,})",
             era_share >= t["VC++ <= 2015 share of EXEs"]),
        ]  # fmt: skip


def size_figures(rows: list[dict]) -> SizeFigures:
    from runtrace.corpus.matching import toolchain_of

    benign = [r for r in rows if r["label"] == "benign"]
    exes = [r for r in benign if r["kind"] == "exe"]
    return SizeFigures(
        files=len(benign),
        groups=len({r["origin_group"] for r in benign}),
        exes=len(exes),
        era_exes=sum(toolchain_of(r) == "msvc" for r in exes),
    )


def _target(name: str) -> str:
    value = SIZE_TARGETS[name]
    if isinstance(value, int):
        return f"{value:,}"
    return "a third" if abs(value - 1 / 3) < 1e-9 else f"{value:.0%}"


def size_rich(rows: list[dict]) -> Table:
    table = Table(title="benign side against issue 24's size figures")
    for col in ("figure", "value", "at least", "met"):
        table.add_column(col, justify="left" if col == "figure" else "right")
    for name, value, met in size_figures(rows).figures():
        table.add_row(name, value, _target(name), "yes" if met else "[red]no")
    return table


def size_markdown(rows: list[dict]) -> str:
    lines = ["| benign side | value | at least | met |", "|---|---:|---:|---|"]
    for name, value, met in size_figures(rows).figures():
        lines.append(f"| {name} | {value} | {_target(name)} | {'yes' if met else '**no**'} |")
    return "\n".join(lines)


def _pivot(rows: list[dict]) -> tuple[list[tuple[str, str, str]], list[str], dict]:
    """Rows: (arch, kind, compiler); columns: class; cell counts."""
    cells: dict[tuple, Counter] = defaultdict(Counter)
    for r in rows:
        cells[(r["arch"], r["kind"], r["compiler"])][r["label"]] += 1
    keys = sorted(cells, key=lambda k: (k[0], k[1], -sum(cells[k].values()), k[2]))
    return keys, list(CLASSES), cells


def composition_rich(rows: list[dict], title: str = "corpus composition") -> Table:
    keys, classes, cells = _pivot(rows)
    table = Table(title=title)
    for col in ("arch", "kind", "compiler"):
        table.add_column(col)
    for label in classes:
        table.add_column(label, justify="right")
    for key in keys:
        table.add_row(*key, *(str(cells[key][c] or "") for c in classes))
    totals = Counter(r["label"] for r in rows)
    table.add_row("[bold]total", "", "", *(f"[bold]{totals[c]}" for c in classes))
    return table


def summary_rich(rows: list[dict]) -> Table:
    table = Table(title="per class")
    for col in ("class", "files", "groups", "packages", "i386", "exe", "dll", "driver", ".NET", "signed"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for label in CLASSES:
        s = summarize_class(rows, label)
        table.add_row(
            label, str(s.files), str(s.groups), str(s.packages), f"{s.i386_share:.0%}", str(s.exes),
            str(s.dlls), str(s.drivers), str(s.dotnet), str(s.signed),
        )  # fmt: skip
    return table


def composition_markdown(rows: list[dict]) -> str:
    keys, classes, cells = _pivot(rows)
    lines = [
        "| arch | kind | compiler | " + " | ".join(classes) + " |",
        "|---|---|---|" + "---:|" * len(classes),
    ]
    for key in keys:
        lines.append("| " + " | ".join(key) + " | " + " | ".join(str(cells[key][c]) for c in classes) + " |")
    totals = Counter(r["label"] for r in rows)
    lines.append("| **total** | | | " + " | ".join(f"**{totals[c]}**" for c in classes) + " |")
    return "\n".join(lines)


def summary_markdown(rows: list[dict]) -> str:
    head = "| class | files | origin groups | packages | i386 | exe | dll | driver | .NET | signed |"
    lines = [head, "|---|" + "---:|" * 9]
    for label in CLASSES:
        s = summarize_class(rows, label)
        lines.append(
            f"| {label} | {s.files} | {s.groups} | {s.packages} | {s.i386_share:.0%} | {s.exes} | {s.dlls} "
            f"| {s.drivers} | {s.dotnet} | {s.signed} |"
        )
    return "\n".join(lines)


def packages_markdown(rows: list[dict]) -> str:
    """Benign files per package (Debian package / PyPI project / archive)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        counts[(r["label"], r["source"], r["package"])][r["kind"]] += 1
    lines = ["| class | source | package | files | exe | dll | driver |", "|---|---|---|---:|---:|---:|---:|"]
    for (label, source, package), c in sorted(
        counts.items(), key=lambda kv: (kv[0][0], -sum(kv[1].values()))
    ):
        n = sum(c.values())
        lines.append(f"| {label} | {source} | {package} | {n} | {c['exe']} | {c['dll']} | {c['driver']} |")
    return "\n".join(lines)


def trace_coverage_markdown(rows: list[dict], min_instructions: int = 1000) -> str:
    """Per class and source: files, traced, and traced long enough to enter a dataset."""
    counts: dict[tuple, Counter] = defaultdict(Counter)
    for r in rows:
        c = counts[(r["label"], r["source"])]
        c["files"] += 1
        if r.get("trace_status") == "ok":
            c["traced"] += 1
            c["long"] += (r.get("instruction_count") or 0) >= min_instructions
    lines = [
        f"| class | source | files | traced | ≥ {min_instructions:,} instructions | share of traced |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (label, source), c in sorted(counts.items()):
        share = f"{c['long'] / c['traced']:.0%}" if c["traced"] else "–"
        lines.append(f"| {label} | {source} | {c['files']} | {c['traced']} | {c['long']} | {share} |")
    return "\n".join(lines)


# The section of a Markdown page `runtrace corpus audit --write-doc` writes, between these markers; the
# rest of the page is left as it is.
DOC_BEGIN = "<!-- corpus-figures:begin (written by `runtrace corpus audit --write-doc`) -->"
DOC_END = "<!-- corpus-figures:end -->"


def audit_document(
    rows: list[dict],
    results,
    manifest: str,
    digest: str,
    include_trace: bool,
    day: str,
    notes: list[str] = (),
    training_rows: list[dict] | None = None,
    figure_sections: list[str] = (),
) -> str:
    """The corpus figures and audit results as one Markdown section: the audit first (with notes on what
    each audited set is), the training set's classes when a dataset was audited, histograms, then the
    corpus's composition."""
    from runtrace.corpus.audit import audit_markdown

    return "\n\n".join([
        f"Figures written by `runtrace corpus audit` on {day} from `{manifest}` "
        f"(manifest sha256 `{digest[:16]}...`), trace columns: {'yes' if include_trace else 'no'}.",
        "### Shortcut audit", audit_markdown(results), *notes,
        *([] if training_rows is None else ["### Training set per class", summary_markdown(training_rows)]),
        *figure_sections,
        "### Traced long enough, per source", trace_coverage_markdown(rows),
        "### Per class", summary_markdown(rows),
        "### Size against issue 24's figures", size_markdown(rows),
        "### Class x arch x kind x compiler", composition_markdown(rows),
        "### Files per package", packages_markdown(rows),
    ])  # fmt: skip


def figure_sections(figures: Path | None, subsets: dict[str, list[dict]], doc_dir: Path) -> list[str]:
    """Class histograms of the corpus (and of the training set and match preview when audited) written
    into `figures` as PNG, and the Markdown that shows them from a page in `doc_dir`; none without
    `figures`."""
    if figures is None:
        return []
    from runtrace.corpus.plots import write_histograms

    sets = {"corpus": subsets["all"]}
    for name in ("training set", "match preview"):
        if name in subsets:
            sets[name.replace(" ", "-")] = subsets[name]
    lines = ["### Histograms (share of each class)"]
    for name, trait, png in write_histograms(sets, figures):
        lines.append(f"![{name}: {trait}]({os.path.relpath(png, doc_dir)})")
    return ["\n\n".join(lines)]


def write_audit_doc(
    doc: Path, manifest: Path, results, sets: AuditSets, include_trace: bool, figures: Path | None = None
) -> None:
    """The audit's section of the page `doc` (`corpus audit --write-doc`), dated and naming the
    manifest by path and sha256; histograms into `figures` when given."""
    digest = hashlib.sha256(Path(manifest).read_bytes()).hexdigest()
    rows = sets.subsets["all"]
    block = audit_document(
        rows, results, str(manifest), digest, include_trace, date.today().isoformat(), notes=sets.notes,
        training_rows=sets.training_rows, figure_sections=figure_sections(figures, sets.subsets, doc.parent),
    )  # fmt: skip
    write_doc_section(doc, block)


# The section `runtrace corpus lineage --write-doc` writes.
LINEAGE_BEGIN = "<!-- corpus-lineage:begin (written by `runtrace corpus lineage --write-doc`) -->"
LINEAGE_END = "<!-- corpus-lineage:end -->"


def write_doc_section(path, block: str, begin: str = DOC_BEGIN, end: str = DOC_END) -> None:
    """Put `block` between the markers of the page at `path` (appended when the page has none)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    section = f"{begin}\n{block}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + section + tail
    else:
        text = (text.rstrip() + "\n\n" if text else "") + section + "\n"
    path.write_text(text, encoding="utf-8")


def problem_kind(reason: str) -> str:
    """The kind of a skipped file's problem, for the one-line count after a build."""
    for needle, kind in [
        ("pip download", "download failures"),
        ("download ", "download failures"),
        ("reserved project", "reserved (independent check)"),
        ("no Windows files", "no Windows files in the years"),
        ("apt-get", "download failures"),
        ("unsupported architecture", "non-x86 architecture"),
        ("neither class", "unlabelled (grayware etc.)"),
        ("labelled", "label conflicts"),
        ("not PE", "not PE"),
        ("no MZ", "not PE"),
        ("PE header", "not PE"),
    ]:
        if needle in reason:
            return kind
    return "other"
