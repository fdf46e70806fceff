"""Histograms of the two classes' packaging traits (linker version, toolchain, year, size) as PNG files.

The shortcut audit says *how much* metadata separates the classes; these plots show *where*.  Each figure
puts both classes side by side, as shares of their class, so that a class ten times larger does not
hide the other.  matplotlib runs headless (Agg); nothing here opens a window.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from runtrace.corpus.matching import linker_era

CLASSES = (("malicious", "#c0392b"), ("benign", "#2e86c1"))
ERA_ORDER = ["2", "5", "6", "7", "8", "9", "10", "11", "12", "14.0", "14.1x", "14.2x", "14.3x"]


def _shares(values: list) -> Counter:
    counts = Counter(values)
    total = sum(counts.values()) or 1
    return Counter({k: n / total for k, n in counts.items()})


def _year(row: dict) -> str:
    """The year the file was first public where the manifest knows it, else its PE timestamp's year
    (when plausible): the plot says which."""
    seen = row.get("first_seen")
    if seen:
        return str(seen)[:4]
    stamp = int(row.get("timestamp") or 0)
    year = datetime.fromtimestamp(stamp, UTC).year if stamp else 0
    return str(year) if 1995 <= year <= datetime.now(UTC).year else "invalid"


def _size_bin(row: dict) -> str:
    exponent = int(math.log2(max(1, int(row.get("size") or 1))))
    return f"2^{exponent}"


TRAITS = {
    "linker": ("linker-version era", linker_era),
    "toolchain": ("toolchain", lambda r: r.get("compiler") or "unknown"),
    "year": ("year (first seen; else PE timestamp)", _year),
    "size": ("file size (bytes, power-of-two bins)", _size_bin),
}


def _order(trait: str, keys: set) -> list:
    if trait == "linker":
        return [k for k in ERA_ORDER if k in keys] + sorted(keys - set(ERA_ORDER))
    if trait == "size":
        return sorted(keys, key=lambda k: int(k[2:]))
    if trait == "year":
        return sorted(keys, key=lambda k: (k == "invalid", k))
    return sorted(keys)


def histogram_png(rows: list[dict], trait: str, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label, key_of = TRAITS[trait]
    shares = {c: _shares([key_of(r) for r in rows if r["label"] == c]) for c, _ in CLASSES}
    keys = _order(trait, set().union(*shares.values()))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.38 * len(keys) + 2), 3.4), dpi=110)
    width = 0.4
    for i, (c, colour) in enumerate(CLASSES):
        n = sum(r["label"] == c for r in rows)
        xs = [j + (i - 0.5) * width for j in range(len(keys))]
        ax.bar(xs, [shares[c][k] for k in keys], width, label=f"{c} ({n})", color=colour)
    ax.set_xticks(range(len(keys)), keys, rotation=60 if len(keys) > 10 else 0, fontsize=8)
    ax.set_ylabel("share of class")
    ax.set_xlabel(label)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_histograms(sets: dict[str, list[dict]], out_dir: Path) -> list[tuple[str, str, Path]]:
    """One PNG per (set, trait): `<out_dir>/<set>-<trait>.png`; returns (set, trait, path) triples."""
    written = []
    for name, rows in sets.items():
        if not rows:
            continue
        for trait in TRAITS:
            path = out_dir / f"{name}-{trait}.png"
            histogram_png(rows, trait, path, f"{name}: {TRAITS[trait][0]}")
            written.append((name, trait, path))
    return written
