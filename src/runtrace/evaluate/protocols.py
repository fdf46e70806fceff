"""How files (or windows) are split into training and test folds.

Five protocols, each reported under its own name (docs/evaluation.md):

- ``leaky``: windows cut from every file are shuffled and split at random, so windows of one
  executable sit on both sides.  It exists only to show how much such a split inflates results.
- ``by-file`` (primary): stratified k-fold over files; a file is wholly in train or wholly in test.
- ``by-origin``: stratified group k-fold over the ``group`` column (benign package, malware family), so
  no origin straddles train and test.
- ``by-family``: stratified group k-fold where malware is grouped by its family (actor, report or
  family label from the corpus; `lineage.py`) and everything else by origin, on a set where no family
  keeps more than `family_cap` files, so one actor (APT1) can neither fill the training set nor the
  figures.
- ``temporal``: one split by first-seen date: train on files first seen before a cut, test on those
  seen on or after it, both classes; undated files sit out.  The cut balances both classes over both
  sides (`lineage.choose_cut`) unless one is given.

Fold assignment is a function of the files' sha256 digests, labels and groups and the seed, never of
row order, so an ISM and a BSM dataset built from the same corpus get the same folds in one run.  It is
still a function of the whole set: when a file enters or leaves (a new tracer revision runs it past the
1,000-instruction floor, or no longer), stratified group k-fold deals every group anew.  `hashed=True`
puts each group in the fold a seeded hash of its name picks instead, whatever else is in the set: two
datasets of the same corpus traced by two tracer revisions then share their folds group for group, so
their models can be compared on the same training and test groups (without class stratification: the
folds' class balance is left to chance).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from runtrace.evaluate import lineage
from runtrace.evaluate.names import (  # defined there for the command line; P.BY_FILE still reads them
    BY_FAMILY,
    BY_FILE,
    BY_ORIGIN,
    DEFAULT_FAMILY_CAP,
    LEAKY,
    TEMPORAL,
)
from runtrace.models.interface import SequenceData


class ProtocolError(ValueError):
    """The data cannot support the requested protocol (too few files, classes or groups)."""


@dataclass(frozen=True)
class Fold:
    index: int
    train: np.ndarray  # row indices into the dataset (files, or windows for the leaky protocol)
    test: np.ndarray


@dataclass
class Plan:
    """The folds of one protocol on one dataset (or its window view), with what was noticed on the way."""

    protocol: str
    unit: str  # "file" or "window"
    folds: list[Fold]
    notes: list[str] = field(default_factory=list)
    # The rows the protocol evaluates (None: all).  by-family leaves out files over its family cap,
    # temporal the undated files and (from testing) those before the cut.
    rows: np.ndarray | None = None
    info: dict = field(default_factory=dict)  # what the report shows about the split (JSON-able)


def sha256_column(data: SequenceData) -> np.ndarray:
    return np.asarray(data.files.column("sha256").to_pylist(), dtype=object)


def origin_groups(data: SequenceData) -> np.ndarray:
    """The group of every row; a file with no known origin is a group of its own.

    Treating an unknown origin as its own group is the cautious choice for by-origin: it can only make
    the split coarser than needed for known origins, never put two files of one known origin apart.
    """
    # The files table keeps nulls as nulls (groups() may have turned them into the string "None").
    names = data.files.column_names
    raw = data.files.column("group").to_pylist() if "group" in names else list(data.groups())
    shas = sha256_column(data)
    out = np.empty(len(shas), dtype=object)
    for i, (g, sha) in enumerate(zip(raw, shas, strict=True)):
        out[i] = f"file:{sha}" if g is None or (isinstance(g, str) and not g.strip()) else str(g)
    return out


def _stable_order(keys: np.ndarray) -> np.ndarray:
    return np.argsort(np.asarray([str(k) for k in keys], dtype=object), kind="stable")


def _check_classes(y: np.ndarray, k: int, what: str) -> list[str]:
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=2)
    if counts.min() == 0:
        raise ProtocolError(f"{what}: only one class present ({counts[0]} benign, {counts[1]} malicious)")
    if counts.max() < k:
        raise ProtocolError(f"{what}: k={k} folds need at least {k} files of a class, have {counts.tolist()}")
    notes = []
    if counts.min() < k:
        notes.append(
            f"{what}: only {counts.min()} files of the smaller class for k={k}; "
            "some test folds hold none of that class"
        )
    return notes


def _splits(splitter, y: np.ndarray, groups: np.ndarray | None = None):
    with warnings.catch_warnings():
        # The "least populated class" warning is turned into a report note by _check_classes.
        warnings.simplefilter("ignore", UserWarning)
        return list(splitter.split(np.zeros(len(y)), y, groups))


def _hashed_splits(groups: np.ndarray, k: int, seed: int, what: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) positions with each group in fold sha256(f"{seed}:{group}") mod k."""
    hashes = [hashlib.sha256(f"{seed}:{g}".encode()).hexdigest() for g in groups.tolist()]
    fold_of = np.asarray([int(h, 16) % k for h in hashes], dtype=np.int64)
    empty = [i for i in range(k) if not np.any(fold_of == i)]
    if empty:
        raise ProtocolError(f"{what}: hashed folds {empty} hold no group; use fewer folds or drawn folds")
    return [(np.flatnonzero(fold_of != i), np.flatnonzero(fold_of == i)) for i in range(k)]


def by_file(data: SequenceData, k: int = 5, seed: int = 0) -> Plan:
    y = np.asarray(data.labels(), dtype=np.int64)
    notes = _check_classes(y, k, BY_FILE)
    shas = sha256_column(data)
    order = _stable_order(shas)
    n_duplicates = len(shas) - len(set(shas.tolist()))
    if n_duplicates:
        # Rows with one sha256 are one executable: they must land on the same side.
        notes.append(f"{BY_FILE}: {n_duplicates} rows repeat a sha256; repeated files are kept together")
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = _splits(splitter, y[order], shas[order])
    else:
        parts = _splits(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed), y[order])
    folds = [Fold(i, np.sort(order[tr]), np.sort(order[te])) for i, (tr, te) in enumerate(parts)]
    return Plan(BY_FILE, "file", folds, notes)


def by_origin(data: SequenceData, k: int = 5, seed: int = 0, hashed: bool = False) -> Plan:
    y = np.asarray(data.labels(), dtype=np.int64)
    notes = _check_classes(y, k, BY_ORIGIN)
    groups = origin_groups(data)
    n_groups = len(set(groups.tolist()))
    if n_groups < k:
        raise ProtocolError(f"{BY_ORIGIN}: {n_groups} distinct groups, fewer than k={k} folds")
    n_unknown = sum(g.startswith("file:") for g in groups)
    if n_unknown:
        notes.append(f"{BY_ORIGIN}: {n_unknown} files without a known origin, each counted as its own group")
    order = _stable_order(sha256_column(data))
    folds = [
        Fold(i, np.sort(order[tr]), np.sort(order[te]))
        for i, (tr, te) in enumerate(_grouped_splits(y[order], groups[order], k, seed, hashed, BY_ORIGIN))
    ]
    return Plan(BY_ORIGIN, "file", folds, notes)


def _grouped_splits(y: np.ndarray, groups: np.ndarray, k: int, seed: int, hashed: bool, what: str):
    if hashed:
        return _hashed_splits(groups, k, seed, what)
    return _splits(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed), y, groups)


def protocol_groups(protocol: str, data: SequenceData) -> np.ndarray | None:
    """The groups a grouped protocol keeps whole (None for the others)."""
    if protocol == BY_ORIGIN:
        return origin_groups(data)
    if protocol == BY_FAMILY:
        return lineage.family_groups(data, origin_groups(data))
    return None


def by_family(
    data: SequenceData, k: int = 5, seed: int = 0, family_cap: int = DEFAULT_FAMILY_CAP, hashed: bool = False
) -> Plan:
    if not lineage.has_column(data, lineage.FAMILY):
        raise ProtocolError(
            f"{BY_FAMILY}: no file has a family (run `runtrace evaluate` with --manifest of a corpus "
            "that records families)"
        )
    y_all = np.asarray(data.labels(), dtype=np.int64)
    shas = sha256_column(data)
    rows, capped = lineage.cap_families(data, shas, family_cap, seed)
    y = y_all[rows]
    notes = _check_classes(y, k, BY_FAMILY)
    groups = protocol_groups(BY_FAMILY, data)
    n_groups = len(set(groups[rows].tolist()))
    if n_groups < k:
        raise ProtocolError(f"{BY_FAMILY}: {n_groups} distinct groups, fewer than k={k} folds")
    fam = lineage.families(data)
    with_family = int(np.sum((fam[rows] != "") & (y == 1)))
    without = int(np.sum((fam[rows] == "") & (y == 1)))
    if capped:
        dropped = sum(n - kept for n, kept in capped.values())
        notes.append(
            f"{BY_FAMILY}: at most {family_cap} files per family, drawn at random (seed {seed}): "
            + ", ".join(f"{f} {kept} of {n}" for f, (n, kept) in capped.items())
            + f"; {dropped} files sit out"
        )
    if without:
        notes.append(f"{BY_FAMILY}: {without} malicious files have no family; each keeps its origin group")
    order = rows[_stable_order(shas[rows])]
    folds = [
        Fold(i, np.sort(order[tr]), np.sort(order[te]))
        for i, (tr, te) in enumerate(_grouped_splits(y_all[order], groups[order], k, seed, hashed, BY_FAMILY))
    ]
    info = {
        "family_cap": family_cap,
        "capped": capped,
        "families": len({f for f in fam[rows] if f}),
        "malicious_with_family": with_family,
        "malicious_without_family": without,
    }
    return Plan(BY_FAMILY, "file", folds, notes, rows=np.sort(rows), info=info)


def _class_counts(y: np.ndarray, rows: np.ndarray) -> str:
    return f"{int(np.sum(y[rows] == 1))} malicious / {int(np.sum(y[rows] == 0))} benign"


def temporal(
    data: SequenceData, cut: dt.date | None = None, min_per_side: int = lineage.MIN_PER_SIDE
) -> Plan:
    dates = lineage.first_seen(data)
    y = np.asarray(data.labels(), dtype=np.int64)
    dated = np.asarray([i for i, d in enumerate(dates) if d is not None], dtype=np.int64)
    if not len(dated) or len(set(y[dated].tolist())) < 2:
        raise ProtocolError(
            f"{TEMPORAL}: first-seen dates are known for {len(dated)} files, not for both classes "
            "(run `runtrace evaluate` with --manifest of a corpus that records first_seen)"
        )
    rule = "given"
    if cut is None:
        cut, share = lineage.choose_cut([dates[i] for i in dated], y[dated], min_per_side)
        rule = (
            f"chosen: the month boundary whose smallest class share on either side is largest ({share:.0%})"
        )
    before = np.asarray([i for i in dated if dates[i] < cut], dtype=np.int64)
    after = np.asarray([i for i in dated if dates[i] >= cut], dtype=np.int64)
    sides = f"train {_class_counts(y, before)}, test {_class_counts(y, after)}"
    short = [
        f"{side} {name}"
        for side, rows in (("train", before), ("test", after))
        for cls, name in ((0, "benign"), (1, "malicious"))
        if np.sum(y[rows] == cls) < min_per_side
    ]
    if short:
        raise ProtocolError(
            f"{TEMPORAL}: cut {cut.isoformat()} leaves fewer than {min_per_side} files for "
            f"{', '.join(short)} ({sides})"
        )
    undated = {
        name: int(np.sum(y == cls) - np.sum(y[dated] == cls))
        for cls, name in ((0, "benign"), (1, "malicious"))
    }
    notes = [
        f"{TEMPORAL}: trained on files first seen before {cut.isoformat()}, tested on files first seen on "
        f"or after it ({sides}); cut {rule}"
    ]
    if any(undated.values()):
        notes.append(
            f"{TEMPORAL}: {undated['malicious']} malicious and {undated['benign']} benign files have no "
            "first-seen date and sit out"
        )
    info = {
        "cut": cut.isoformat(),
        "rule": rule,
        "undated": undated,
        "by_year": lineage.year_table(dates, y, before, "train")
        + lineage.year_table(dates, y, after, "test"),
    }
    if lineage.has_column(data, lineage.DATED_BY):
        rules = lineage.dating_rules(data)
        info["by_dating_rule"] = lineage.rule_table(rules, y, before, "train") + lineage.rule_table(
            rules, y, after, "test"
        )
        unseen = lineage.unseen_before_cut(info["by_dating_rule"])
        if unseen:
            listed = ", ".join(f"{r['files']} {r['label']} dated by {r['dated_by']}" for r in unseen)
            notes.append(f"{TEMPORAL}: only on the test side, with no training file so dated: {listed}")
    fold = Fold(0, np.sort(before), np.sort(after))
    return Plan(TEMPORAL, "file", [fold], notes, rows=np.sort(dated), info=info)


def leaky(windows: SequenceData, k: int = 5, seed: int = 0) -> Plan:
    """Random stratified k-fold over windows, ignoring which file each window came from."""
    y = np.asarray(windows.labels(), dtype=np.int64)
    notes = _check_classes(y, k, LEAKY)
    starts = windows.files.column("window_start").to_numpy()
    keys = np.asarray([f"{s}:{w:012d}" for s, w in zip(sha256_column(windows), starts, strict=True)])
    order = _stable_order(keys)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = [
        Fold(i, np.sort(order[tr]), np.sort(order[te]))
        for i, (tr, te) in enumerate(_splits(splitter, y[order]))
    ]
    return Plan(LEAKY, "window", folds, notes)


def inner_splits(
    protocol: str, data: SequenceData, train_idx: np.ndarray, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Splits of one training fold, made the way the protocol splits the whole set.

    Used to get out-of-fold *training* scores for choosing a threshold.  Under by-origin and by-family
    the inner split is grouped too; otherwise the threshold would be tuned on scores of families the
    inner model had already seen, which are optimistic.  (Under temporal the training fold lies wholly
    before the cut, so a split by file inside it cannot see the future.)  Returns [] when the fold is
    too small to split.
    """
    train_idx = np.asarray(train_idx)
    y = np.asarray(data.labels(), dtype=np.int64)[train_idx]
    counts = np.bincount(y, minlength=2)
    n_splits = min(n_splits, int(counts.min()))
    all_groups = protocol_groups(protocol, data)
    if all_groups is not None:
        groups = all_groups[train_idx]
        n_splits = min(n_splits, len(set(groups.tolist())))
    if n_splits < 2:
        return []
    order = _stable_order(sha256_column(data)[train_idx])
    if all_groups is not None:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        parts = _splits(splitter, y[order], groups[order])
    else:
        parts = _splits(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed), y[order])
    return [(np.sort(train_idx[order[a]]), np.sort(train_idx[order[b]])) for a, b in parts]


def check_plan(plan: Plan, data: SequenceData) -> None:
    """Refuse to evaluate on folds that would mix train and test; cheap enough to run every time."""
    groups = protocol_groups(plan.protocol, data)
    shas = sha256_column(data) if plan.unit == "file" else None
    seen_in_test = np.zeros(len(data.labels()), dtype=np.int64)
    evaluated = np.ones(len(seen_in_test), dtype=bool)
    if plan.rows is not None:
        evaluated[:] = False
        evaluated[plan.rows] = True
    dates = lineage.first_seen(data) if plan.protocol == TEMPORAL else None
    for fold in plan.folds:
        if not (evaluated[fold.train].all() and evaluated[fold.test].all()):
            raise AssertionError(f"{plan.protocol} fold {fold.index}: uses a row outside the evaluated set")
        if (
            dates is not None
            and len(fold.train)
            and len(fold.test)
            and max(dates[i] for i in fold.train) >= min(dates[i] for i in fold.test)
        ):
            raise AssertionError(f"{plan.protocol}: a training file is not older than every test file")
        if np.intersect1d(fold.train, fold.test).size:
            raise AssertionError(f"{plan.protocol} fold {fold.index}: a row is in both train and test")
        if shas is not None and set(shas[fold.train]) & set(shas[fold.test]):
            raise AssertionError(f"{plan.protocol} fold {fold.index}: one sha256 is in both train and test")
        if groups is not None and set(groups[fold.train]) & set(groups[fold.test]):
            raise AssertionError(f"{plan.protocol} fold {fold.index}: a group straddles train and test")
        seen_in_test[fold.test] += 1
    if plan.protocol == TEMPORAL:
        if np.any(seen_in_test > 1):
            raise AssertionError(f"{plan.protocol}: a row is in more than one test fold")
    elif not np.all(seen_in_test[evaluated] == 1) or np.any(seen_in_test[~evaluated]):
        raise AssertionError(f"{plan.protocol}: every evaluated row must be in exactly one test fold")
