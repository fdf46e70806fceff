"""Families and first-seen dates of a corpus, as Markdown tables and two histograms (matplotlib).

Written into docs/corpus.md by `runtrace corpus lineage --write-doc`; computed from the manifest alone,
so the page and the corpus cannot disagree.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from runtrace.corpus.dates import RULES

KIND_ORDER = ("threat-actor", "report-or-campaign", "malware-family", "crypter")
KIND_COLOURS = {
    "threat-actor": "#b2182b",
    "report-or-campaign": "#ef8a62",
    "malware-family": "#2166ac",
    "crypter": "#67a9cf",
}
MIN_TRACE = 1000  # the datasets keep traces of at least this many instructions (Makefile MIN_INSTRUCTIONS)
FAMILIES_SHOWN = 30


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _long_trace(row: dict) -> bool:
    return (row.get("instruction_count") or 0) >= MIN_TRACE


def _traced(row: dict) -> bool:
    return row.get("trace_status") == "ok"


def family_counts(rows: list[dict]) -> list[tuple[str, str, int, int, int]]:
    """(family, kind, files, traced, traced >= MIN_TRACE instructions) per family, largest first."""
    files: Counter = Counter()
    traced: Counter = Counter()
    long: Counter = Counter()
    kinds: dict[str, str] = {}
    for r in rows:
        family = r.get("family")
        if r["label"] != "malicious" or not family:
            continue
        files[family] += 1
        traced[family] += _traced(r)
        long[family] += _long_trace(r)
        kinds[family] = r.get("family_kind") or "unspecified"
    return [
        (f, kinds[f], n, traced[f], long[f]) for f, n in sorted(files.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def lineage_markdown(rows: list[dict]) -> str:
    by_kind: Counter = Counter()
    files_by_kind: Counter = Counter()
    for _family, kind, n, _, _ in family_counts(rows):
        by_kind[kind] += 1
        files_by_kind[kind] += n
    malicious = [r for r in rows if r["label"] == "malicious"]
    no_family = sum(1 for r in malicious if not r.get("family"))
    kinds_table = _table(
        ["family kind (from the collection)", "labels", "malicious files"],
        [[k, str(by_kind[k]), str(files_by_kind[k])] for k in sorted(by_kind, key=_kind_rank)]
        + [["(no family: capa-testfiles)", "-", str(no_family)]],
    )
    families = family_counts(rows)
    family_table = _table(
        ["family", "kind", "files", "traced", f"traced >= {MIN_TRACE:,} instructions"],
        [[f, k, str(n), str(t), str(lt)] for f, k, n, t, lt in families[:FAMILIES_SHOWN]],
    )
    rest = families[FAMILIES_SHOWN:]
    rest_line = (
        f"The other {len(rest)} labels hold {sum(n for *_, n, _, _ in rest)} files "
        f"({', '.join(f'{f} {n}' for f, _, n, _, _ in rest)})."
        if rest
        else ""
    )
    rules: Counter = Counter((r["label"], r.get("first_seen_source") or "undated") for r in rows)
    rule_rows = [
        [rule, str(rules[("malicious", rule)]), str(rules[("benign", rule)])] for rule in (*RULES, "undated")
    ]
    rule_table = _table(["first_seen rule", "malicious", "benign"], rule_rows)
    years: Counter = Counter((r["label"], r["first_seen"].year) for r in rows if r.get("first_seen"))
    all_years = sorted({y for _, y in years})
    year_table = _table(
        ["year first seen", "malicious", "benign"],
        [[str(y), str(years[("malicious", y)]), str(years[("benign", y)])] for y in all_years],
    )
    return "\n\n".join(
        [
            "#### Family labels by kind",
            kinds_table,
            f"#### The {FAMILIES_SHOWN} largest families",
            family_table + ("\n\n" + rest_line if rest_line else ""),
            "#### First seen: which rule dated how many files",
            rule_table,
            "#### Files per year first seen",
            year_table,
        ]
    )


def _kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def write_plots(rows: list[dict], out_dir: Path) -> list[Path]:
    """`corpus-families.png` (files per family, coloured by kind) and `corpus-years.png` (files per year
    first seen, per class and dating rule)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    families = family_counts(rows)[:FAMILIES_SHOWN]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(families) + 1.4))
    names = [f for f, *_ in families][::-1]
    ax.barh(
        names,
        [n for _, _, n, _, _ in families][::-1],
        color=[KIND_COLOURS.get(k, "grey") for _, k, *_ in families][::-1],
    )
    ax.barh(
        names, [lt for *_, lt in families][::-1], color="none", edgecolor="black", hatch="///", linewidth=0.5
    )
    ax.set_xlabel(f"malicious files (hatched: traced >= {MIN_TRACE:,} instructions)")
    ax.set_title(f"The {len(families)} largest malware family labels")
    handles = [plt.Rectangle((0, 0), 1, 1, color=KIND_COLOURS[k]) for k in KIND_ORDER]
    ax.legend(handles, KIND_ORDER, loc="lower right", fontsize=8)
    fig.tight_layout()
    path = out_dir / "corpus-families.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    years = sorted({r["first_seen"].year for r in rows if r.get("first_seen")})
    panels = [
        ("malicious", [("csv-date", "#b2182b"), ("pe-timestamp", "#ef8a62")]),
        ("benign", [("pypi-upload", "#2166ac"), ("debian-changelog", "#67a9cf")]),
    ]
    fig, axes = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    for ax, (label, rules) in zip(axes, panels, strict=True):
        bottom = [0] * len(years)
        for rule, colour in rules:
            counts = Counter(
                r["first_seen"].year
                for r in rows
                if r["label"] == label and r.get("first_seen") and r.get("first_seen_source") == rule
            )
            heights = [counts[y] for y in years]
            ax.bar([str(y) for y in years], heights, bottom=bottom, color=colour, label=rule)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        undated = sum(1 for r in rows if r["label"] == label and not r.get("first_seen"))
        ax.set_ylabel(f"{label} files")
        ax.legend(title=f"dated by ({undated} undated)", fontsize=8, title_fontsize=8, loc="upper left")
    axes[0].set_title("Corpus files per year first seen")
    axes[1].tick_params(axis="x", rotation=90, labelsize=8)
    fig.tight_layout()
    path = out_dir / "corpus-years.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths
