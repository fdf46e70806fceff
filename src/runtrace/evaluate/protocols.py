"""How files (or windows) are split into training and test folds.

Three protocols, each reported under its own name (docs/evaluation.md):

- ``leaky``: windows cut from every file are shuffled and split at random, so windows of one
  executable sit on both sides.  It exists only to show how much such a split inflates results.
- ``by-file`` (primary): stratified k-fold over files; a file is wholly in train or wholly in test.
- ``by-origin``: stratified group k-fold over the ``group`` column (benign package, malware family), so
  no origin straddles train and test.

Fold assignment is a function of the files' sha256 digests, labels and groups and the seed, never of
row order, so an ISM and a BSM dataset built from the same corpus get the same folds in one run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from runtrace.models.interface import SequenceData

LEAKY = "leaky"
BY_FILE = "by-file"
BY_ORIGIN = "by-origin"
PROTOCOLS = (LEAKY, BY_FILE, BY_ORIGIN)


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


def by_origin(data: SequenceData, k: int = 5, seed: int = 0) -> Plan:
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
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = [
        Fold(i, np.sort(order[tr]), np.sort(order[te]))
        for i, (tr, te) in enumerate(_splits(splitter, y[order], groups[order]))
    ]
    return Plan(BY_ORIGIN, "file", folds, notes)


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

    Used to get out-of-fold *training* scores for choosing a threshold.  Under by-origin the inner
    split is grouped too; otherwise the threshold would be tuned on scores of families the inner model
    had already seen, which are optimistic.  Returns [] when the fold is too small to split.
    """
    train_idx = np.asarray(train_idx)
    y = np.asarray(data.labels(), dtype=np.int64)[train_idx]
    counts = np.bincount(y, minlength=2)
    n_splits = min(n_splits, int(counts.min()))
    if protocol == BY_ORIGIN:
        groups = origin_groups(data)[train_idx]
        n_splits = min(n_splits, len(set(groups.tolist())))
    if n_splits < 2:
        return []
    order = _stable_order(sha256_column(data)[train_idx])
    if protocol == BY_ORIGIN:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        parts = _splits(splitter, y[order], groups[order])
    else:
        parts = _splits(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed), y[order])
    return [(np.sort(train_idx[order[a]]), np.sort(train_idx[order[b]])) for a, b in parts]


def check_plan(plan: Plan, data: SequenceData) -> None:
    """Refuse to evaluate on folds that would mix train and test; cheap enough to run every time."""
    groups = origin_groups(data) if plan.protocol == BY_ORIGIN else None
    shas = sha256_column(data) if plan.unit == "file" else None
    seen_in_test = np.zeros(len(data.labels()), dtype=np.int64)
    for fold in plan.folds:
        if np.intersect1d(fold.train, fold.test).size:
            raise AssertionError(f"{plan.protocol} fold {fold.index}: a row is in both train and test")
        if shas is not None and set(shas[fold.train]) & set(shas[fold.test]):
            raise AssertionError(f"{plan.protocol} fold {fold.index}: one sha256 is in both train and test")
        if groups is not None and set(groups[fold.train]) & set(groups[fold.test]):
            raise AssertionError(f"{plan.protocol} fold {fold.index}: a group straddles train and test")
        seen_in_test[fold.test] += 1
    if not np.all(seen_in_test == 1):
        raise AssertionError(f"{plan.protocol}: every row must be in exactly one test fold")
