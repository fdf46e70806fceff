"""Families and first-seen dates of a dataset's files: the keys of the by-family and temporal protocols.

Both come from the corpus manifest (`family`, `first_seen`), joined onto the dataset's files table by
`runtrace evaluate --manifest`.  No model ever sees them: they decide only which files go where.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter

import numpy as np

from runtrace.models.interface import SequenceData

FAMILY = "family"
FIRST_SEEN = "first_seen"
DATED_BY = "first_seen_source"  # the rule that gave the date: "csv-date", "pypi-upload", "debian-changelog"
# Each side of the temporal cut needs at least this many files of each class: fewer cannot carry a
# training set or an interval worth reporting.
MIN_PER_SIDE = 20


def has_column(data: SequenceData, name: str) -> bool:
    return name in data.files.column_names and data.files.column(name).null_count < data.files.num_rows


def families(data: SequenceData) -> np.ndarray:
    """The family label of every row, lower case ("" where the corpus gives none)."""
    if FAMILY not in data.files.column_names:
        return np.full(data.files.num_rows, "", dtype=object)
    return np.asarray(
        [(f or "").strip().lower() for f in data.files.column(FAMILY).to_pylist()], dtype=object
    )


def family_groups(data: SequenceData, origin: np.ndarray) -> np.ndarray:
    """The by-family grouping key: the family where one is known, else the file's origin group.

    One label from two collections (an actor named in two of them) is one group: files sharing a label
    are related whichever collection says so."""
    fam = families(data)
    return np.asarray([f"family:{f}" if f else o for f, o in zip(fam, origin, strict=True)], dtype=object)


def _draw_order(shas: np.ndarray, seed: int) -> np.ndarray:
    # A seeded hash of the sha256: random-looking, independent of row order and of the dataset.
    keys = [hashlib.sha256(f"{seed}:{s}".encode()).hexdigest() for s in shas]
    return np.argsort(np.asarray(keys, dtype=object), kind="stable")


def cap_families(
    data: SequenceData, shas: np.ndarray, cap: int, seed: int
) -> tuple[np.ndarray, dict[str, list[int]]]:
    """Rows kept when every family keeps at most `cap` files, drawn at random (seeded), never by how
    hard they are; files without a family are all kept.  Returns (rows, {family: [files, kept]})."""
    fam = families(data)
    rows = np.arange(len(fam))
    if cap <= 0:
        return rows, {}
    taken: Counter = Counter()
    keep = np.ones(len(fam), dtype=bool)
    for i in _draw_order(shas, seed):
        if fam[i]:
            taken[fam[i]] += 1
            keep[i] = taken[fam[i]] <= cap
    sizes = Counter(f for f in fam if f)
    capped = {f: [n, cap] for f, n in sizes.most_common() if n > cap}
    return rows[keep], capped


def first_seen(data: SequenceData) -> list[dt.date | None]:
    if FIRST_SEEN not in data.files.column_names:
        return [None] * data.files.num_rows
    out = []
    for v in data.files.column(FIRST_SEEN).to_pylist():
        if isinstance(v, dt.datetime):
            v = v.date()
        elif isinstance(v, str) and v:
            v = dt.date.fromisoformat(v[:10])
        out.append(v or None)
    return out


def _months(first: dt.date, last: dt.date) -> list[dt.date]:
    out, y, m = [], first.year, first.month
    while (y, m) <= (last.year, last.month):
        out.append(dt.date(y, m, 1))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def choose_cut(dates: list[dt.date], labels: np.ndarray, min_per_side: int = 0) -> tuple[dt.date, float]:
    """The month boundary that best balances both classes over both sides.

    For each candidate cut (the first day of a month) the four shares - each class's share of its
    files before and after the cut - are computed; among the cuts that leave at least `min_per_side`
    files of each class on each side (all cuts, when none does), the one whose smallest share is largest
    wins (ties: the later cut, which trains on more).  So neither class is left with only a sliver on
    either side.  Returns (cut, that smallest share)."""
    d = np.asarray([x.toordinal() for x in dates], dtype=np.int64)
    y = np.asarray(labels, dtype=np.int64)
    best: tuple[bool, float, int] | None = None
    for cut in _months(min(dates), max(dates)):
        before = d < cut.toordinal()
        shares, counts = [], []
        for cls in (0, 1):
            n = int(np.sum(y == cls))
            b = int(np.sum(before & (y == cls)))
            shares += [b / n, (n - b) / n]
            counts += [b, n - b]
        score = (min(counts) >= min_per_side, min(shares), cut.toordinal())
        if best is None or score > best:
            best = score
    assert best is not None
    return dt.date.fromordinal(best[2]), best[1]


def year_table(dates: list[dt.date | None], labels: np.ndarray, rows: np.ndarray, side: str) -> list[dict]:
    """Files per class and year among `rows`, as JSON-able records."""
    counts: Counter = Counter()
    for i in rows:
        counts[(int(labels[i]), dates[i].year)] += 1
    return [
        {"side": side, "label": "malicious" if cls else "benign", "year": year, "files": n}
        for (cls, year), n in sorted(counts.items())
    ]


def dating_rules(data: SequenceData) -> list[str]:
    """The rule that dated each row (the manifest's `first_seen_source`, joined by `--manifest`; "unknown"
    where a row has none).  The rules follow the files' sources (a Debian package's changelog, a PyPI
    upload, a collection's csv), so a rule found only on one side of the temporal cut is a source the
    other side never saw."""
    return [r or "unknown" for r in data.files.column(DATED_BY).to_pylist()]


def rule_table(rules: list[str], labels: np.ndarray, rows: np.ndarray, side: str) -> list[dict]:
    """Files per class and dating rule among `rows`, as JSON-able records (as `year_table` per year)."""
    counts: Counter = Counter((int(labels[i]), rules[i]) for i in rows)
    return [
        {"side": side, "label": "malicious" if cls else "benign", "dated_by": rule, "files": n}
        for (cls, rule), n in sorted(counts.items())
    ]


def unseen_before_cut(records: list[dict]) -> list[dict]:
    """The (class, dating rule) cells of a `rule_table` pair with test files and no training file: files of
    a source the model trained before the cut never saw, largest first."""
    train = {(r["label"], r["dated_by"]) for r in records if r["side"] == "train"}
    unseen = [r for r in records if r["side"] == "test" and (r["label"], r["dated_by"]) not in train]
    return sorted(unseen, key=lambda r: (-r["files"], r["label"], r["dated_by"]))
