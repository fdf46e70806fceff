"""The shortcut audit: how well does a classifier that sees only packaging metadata separate the classes?

If arch, kind, size, linker version, section and import counts (and, once traced, trace length and stop
reason) predict the label, a sequence model can score well without learning any behaviour.  The audit
trains small gradient-boosted trees on those columns alone, under grouped cross-validation (an origin
group never straddles train and test), and reports accuracy, FPR, ROC-AUC and what the trees used.

`MetadataShortcutClassifier` is an ordinary sklearn estimator, so the evaluation stage can run it beside
the LSTMs as the metadata baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from runtrace.trace.model import StopReason

# Categorical columns get fixed codes (not learned from the data) so every fold encodes them alike.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "arch": ("i386", "amd64"),
    "kind": ("exe", "dll", "driver"),
    "stop_reason": tuple(r.value for r in StopReason),
}
BASE_FEATURES = ("arch", "kind", "size", "linker_version", "section_count", "import_count")
TRACE_FEATURES = ("trace_length", "stop_reason")
# Not in the default audit, because they are not what the issue asked to test, but informative: the
# extended view shows how much more a model could get from packaging traits that are easy to read.
EXTENDED_FEATURES = ("entropy", "signed", "is_dotnet", "has_rich", "export_count", "timestamp")
_COLUMN_OF = {"trace_length": "instruction_count"}
POSITIVE = "malicious"


def _column(rows: pa.Table, name: str) -> list:
    col = _COLUMN_OF.get(name, name)
    if col not in rows.column_names:
        raise ValueError(f"the manifest has no {col!r} column (needed for feature {name!r})")
    return rows.column(col).to_pylist()


def _encode(name: str, values: list) -> np.ndarray:
    if name in CATEGORIES:
        codes = {v: i for i, v in enumerate(CATEGORIES[name])}
        return np.array([codes.get(v, np.nan) if v is not None else np.nan for v in values], dtype=float)
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def as_table(rows: pa.Table | list[dict]) -> pa.Table:
    return rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))


def feature_names(include_trace: bool, extended: bool = False) -> list[str]:
    names = list(BASE_FEATURES)
    if include_trace:
        names += TRACE_FEATURES
    if extended:
        names += EXTENDED_FEATURES
    return names


def metadata_features(
    rows: pa.Table | list[dict], include_trace: bool = False, extended: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Feature matrix (files x features, NaN = unknown) from manifest rows, and the feature names."""
    table = as_table(rows)
    names = feature_names(include_trace, extended)
    columns = [_encode(n, _column(table, n)) for n in names]
    matrix = np.column_stack(columns) if columns else np.zeros((table.num_rows, 0))
    return matrix, names


def labels_of(rows: pa.Table | list[dict]) -> np.ndarray:
    return np.array([v == POSITIVE for v in _column(as_table(rows), "label")], dtype=int)


class MetadataShortcutClassifier(ClassifierMixin, BaseEstimator):
    """LightGBM on metadata columns; `fit(X, y)` / `predict_proba(X)` like any sklearn classifier.

    X is either a numeric matrix laid out as `metadata_features` makes it (pass its `feature_names` so the
    categorical columns are treated as such), or manifest rows (pyarrow Table / list of dicts), which are
    turned into features here.  Small trees and few leaves on purpose: the audit asks whether a *simple*
    model finds a shortcut, and a few thousand files would let a big one memorise noise.
    """

    def __init__(
        self,
        feature_names: list[str] | None = None,
        include_trace: bool = False,
        extended: bool = False,
        n_estimators: int = 200,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 10,
        class_weight: str | None = "balanced",
        random_state: int = 0,
    ) -> None:
        self.feature_names = feature_names
        self.include_trace = include_trace
        self.extended = extended
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.class_weight = class_weight
        self.random_state = random_state

    def _matrix(self, X) -> tuple[np.ndarray, list[str]]:
        if isinstance(X, pa.Table | list):
            return metadata_features(X, self.include_trace, self.extended)
        matrix = np.asarray(X, dtype=float)
        names = list(self.feature_names or [f"f{i}" for i in range(matrix.shape[1])])
        return matrix, names

    def fit(self, X, y) -> MetadataShortcutClassifier:
        from lightgbm import LGBMClassifier

        matrix, names = self._matrix(X)
        y = np.asarray(y, dtype=int)
        self.feature_names_in_ = np.array(names, dtype=object)
        self.classes_ = np.unique(y)
        self.constant_ = None
        if len(self.classes_) < 2:
            # A fold with one class cannot fit trees; predicting that class is the honest fallback.
            self.constant_ = float(self.classes_[0]) if len(self.classes_) else 0.5
            self.classes_ = np.array([0, 1])
            self.feature_importances_ = np.zeros(len(names))
            return self
        categorical = [i for i, n in enumerate(names) if n in CATEGORIES]
        self.model_ = LGBMClassifier(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            class_weight=self.class_weight,
            random_state=self.random_state,
            importance_type="gain",
            n_jobs=1,  # the shared machine has 2 cores; the data are tiny anyway
            verbose=-1,
        )
        self.model_.fit(matrix, y, categorical_feature=categorical or "auto")
        gains = np.asarray(self.model_.feature_importances_, dtype=float)
        self.feature_importances_ = gains / gains.sum() if gains.sum() > 0 else gains
        return self

    def predict_proba(self, X) -> np.ndarray:
        matrix, _ = self._matrix(X)
        if self.constant_ is not None:
            p = np.full(len(matrix), self.constant_)
            return np.column_stack([1 - p, p])
        return self.model_.predict_proba(matrix)

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


# --- grouped cross-validation -------------------------------------------------------------------


@dataclass
class AuditResult:
    subset: str
    features: list[str]
    n_files: int
    n_malicious: int
    n_benign: int
    n_groups: int
    folds: int
    accuracy: float
    fpr: float
    tpr: float
    auc: float
    auc_ci: tuple[float, float]
    fold_aucs: list[float]
    importances: dict[str, float]  # mean normalised gain over folds
    single_feature_auc: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # tp, fp, tn, fn at threshold 0.5


def fast_auc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count half); sklearn's per-call checks cost ~1000x more,
    which matters inside a bootstrap."""
    ranks = rankdata(np.concatenate([pos_scores, neg_scores]))
    n_pos, n_neg = len(pos_scores), len(neg_scores)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _bootstrap_auc(y: np.ndarray, p: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    pos, neg = p[y == 1], p[y == 0]
    stats = []
    for _ in range(n):
        # Resampling within each class keeps both classes present in every replicate.
        stats.append(fast_auc(rng.choice(pos, len(pos)), rng.choice(neg, len(neg))))
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def grouped_oof_scores(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, names: list[str], folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, list[float], np.ndarray]:
    """Out-of-fold malicious scores; per-fold AUCs; mean feature importances over folds."""
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = np.full(len(y), np.nan)
    fold_aucs, importances = [], []
    for train, test in splitter.split(X, y, groups):
        model = MetadataShortcutClassifier(feature_names=names, random_state=seed).fit(X[train], y[train])
        scores[test] = model.predict_proba(X[test])[:, 1]
        importances.append(model.feature_importances_)
        if len(np.unique(y[test])) == 2:
            fold_aucs.append(float(roc_auc_score(y[test], scores[test])))
    return scores, fold_aucs, np.mean(importances, axis=0)


def joined_groups(groups: list[str], match_ids: list[str | None]) -> np.ndarray:
    """CV groups that keep every matched pair together: connected components of origin groups linked
    by the pairs between them (union-find)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for group, pair in zip(groups, match_ids, strict=True):
        find(group)
        if pair:
            parent[find(group)] = find(f"pair:{pair}")
    return np.array([find(g) for g in groups], dtype=object)


def run_audit(
    rows: pa.Table | list[dict],
    include_trace: bool = False,
    extended: bool = False,
    folds: int = 5,
    seed: int = 0,
    subset: str = "all",
    single_features: bool = True,
) -> AuditResult:
    table = as_table(rows)
    X, names = metadata_features(table, include_trace, extended)
    y = labels_of(table)
    # cv_group joins origin groups that share code (codeid.py); older manifests only have origin_group.
    origin = _column(table, "origin_group")
    code = table.column("cv_group").to_pylist() if "cv_group" in table.column_names else origin
    groups = np.asarray([c or o for c, o in zip(code, origin, strict=True)], dtype=object)
    if "match_id" in table.column_names and table.column("match_id").null_count < table.num_rows:
        groups = joined_groups(groups.tolist(), table.column("match_id").to_pylist())
    n_groups = len(set(groups.tolist()))
    if len(np.unique(y)) < 2:
        raise ValueError("the audit needs both classes in the manifest")
    folds = min(folds, n_groups)
    if folds < 2:
        raise ValueError("the audit needs at least two origin groups")
    scores, fold_aucs, gains = grouped_oof_scores(X, y, groups, names, folds, seed)
    predicted = scores >= 0.5
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    tn = int(np.sum(~predicted & (y == 0)))
    fn = int(np.sum(~predicted & (y == 1)))
    single: dict[str, float] = {}
    if single_features:
        # Each feature alone, through the same grouped CV: which one carries the shortcut by itself.
        for i, name in enumerate(names):
            s, _, _ = grouped_oof_scores(X[:, [i]], y, groups, [name], folds, seed)
            single[name] = float(roc_auc_score(y, s))
    return AuditResult(
        subset=subset,
        features=names,
        n_files=len(y),
        n_malicious=int(y.sum()),
        n_benign=int((1 - y).sum()),
        n_groups=n_groups,
        folds=folds,
        accuracy=(tp + tn) / len(y),
        fpr=fp / max(1, fp + tn),
        tpr=tp / max(1, tp + fn),
        auc=float(roc_auc_score(y, scores)),
        auc_ci=_bootstrap_auc(y, scores, seed=seed),
        fold_aucs=fold_aucs,
        importances=dict(sorted(zip(names, map(float, gains), strict=True), key=lambda kv: -kv[1])),
        single_feature_auc=single,
        counts={"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    )


# --- rendering ----------------------------------------------------------------------------------


def audit_markdown(results: list[AuditResult]) -> str:
    """One table of headline figures (a row per audit run), then importances and single-feature AUCs."""
    lines = [
        "| subset | features | files (mal / ben) | groups | accuracy | FPR | TPR "
        "| ROC-AUC (95 % CI) | fold AUCs |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        folds = ", ".join(f"{a:.2f}" for a in r.fold_aucs)
        lines.append(
            f"| {r.subset} | {', '.join(r.features)} | {r.n_files} ({r.n_malicious} / {r.n_benign}) "
            f"| {r.n_groups} | {r.accuracy:.3f} | {r.fpr:.3f} | {r.tpr:.3f} "
            f"| {r.auc:.3f} ({r.auc_ci[0]:.3f}–{r.auc_ci[1]:.3f}) | {folds} |"
        )
    for r in results:
        lines += ["", f"Feature importances (normalised gain, mean over folds) and single-feature AUC — "
                  f"*{r.subset}, {len(r.features)} features*:", "",
                  "| feature | importance | AUC alone |", "|---|---:|---:|"]  # fmt: skip
        for name, gain in r.importances.items():
            alone = r.single_feature_auc.get(name)
            lines.append(f"| {name} | {gain:.3f} | {'' if alone is None else f'{alone:.3f}'} |")
    return "\n".join(lines)
