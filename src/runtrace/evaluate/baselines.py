"""Baselines that stand beside the LSTMs in every run, behind the same fit / predict_proba interface.

- opcode n-gram counts (1- to 3-grams over the token sequence) + logistic regression, the classic
  alternative to a sequence model;
- LightGBM on the same counts;
- a metadata-only "shortcut audit": if a model that sees only architecture, exe/dll, size, section
  count, trace length and stop reason scores close to the LSTM, the corpus is confounded.

Everything learnt from data (the n-gram vocabulary, tf-idf weights, category codes) is learnt in `fit`
from the training rows only.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from runtrace.evaluate.guard import GuardedView
from runtrace.models.interface import SequenceData

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class NgramCache:
    """Per-row n-gram counts, shared by the estimators of one run so a file is counted once.

    A row's counts do not depend on the fold (only the vocabulary does), so sharing them leaks nothing.
    The cache stops growing at `max_bytes`; rows beyond that are recounted when needed.
    """

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._rows: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._bytes = 0
        # Rows are keyed by id(dataset); holding the datasets keeps those ids from being reused.
        self._datasets: dict[int, object] = {}

    def key(self, data: SequenceData, i: int) -> tuple[int, int]:
        self._datasets.setdefault(id(data), data)
        return id(data), int(i)

    def get(self, key: tuple):
        return self._rows.get(key)

    def put(self, key: tuple, value: tuple[np.ndarray, np.ndarray]) -> None:
        size = value[0].nbytes + value[1].nbytes
        if self._bytes + size <= self.max_bytes:
            self._rows[key] = value
            self._bytes += size


def ngram_keys(tokens: np.ndarray, vocab_size: int, orders: tuple[int, ...]) -> np.ndarray:
    """One uint64 key per n-gram occurrence, for every order in `orders`.

    Keys are exact (a mixed-radix number, offset per order) when the id space allows, else a 64-bit
    multiplicative hash whose collisions are negligible at the vocabulary sizes kept.
    """
    t = np.minimum(np.asarray(tokens, dtype=np.uint64), np.uint64(vocab_size - 1))
    exact = vocab_size ** max(orders) * len(orders) < 2**63
    parts = []
    offset = 0
    for n in orders:
        if len(t) < n:
            offset += vocab_size**n
            continue
        windows = [t[j : len(t) - n + 1 + j] for j in range(n)]
        if exact:
            key = np.zeros(len(windows[0]), dtype=np.uint64)
            for w in windows:
                key = key * np.uint64(vocab_size) + w
            parts.append(key + np.uint64(offset))
            offset += vocab_size**n
        else:
            key = np.full(len(windows[0]), np.uint64(n), dtype=np.uint64)
            with np.errstate(over="ignore"):
                for w in windows:
                    key = (key ^ w) * _GOLDEN
            parts.append(key)
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)


class NgramFeaturizer:
    """Token n-gram counts with a vocabulary chosen on the training rows: the `max_features` n-grams
    found in the most training files (at least `min_df` of them)."""

    def __init__(
        self,
        orders: tuple[int, ...] = (1, 2, 3),
        max_features: int = 20_000,
        min_df: int = 2,
        cache: NgramCache | None = None,
    ) -> None:
        self.orders = orders
        self.max_features = max_features
        self.min_df = min_df
        self.cache = cache
        self.vocabulary_: np.ndarray | None = None  # sorted uint64 keys

    def _row_counts(self, data: SequenceData, i: int) -> tuple[np.ndarray, np.ndarray]:
        # Counts are cached against the dataset behind a guarded view, shared by every fold's view.
        source = data
        if isinstance(data, GuardedView):
            data.check_access(i)  # a cache hit must not bypass the guard
            source = data.dataset
        key = self.cache.key(source, i) if self.cache is not None else None
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            return hit
        keys, counts = np.unique(
            ngram_keys(data.sequence(int(i)), len(data.lexicon) + 1, self.orders), return_counts=True
        )
        value = (keys, counts.astype(np.int32))
        if self.cache is not None:
            self.cache.put(key, value)
        return value

    def fit(self, data: SequenceData, idx: np.ndarray) -> NgramFeaturizer:
        # Document frequencies, merged in chunks so memory stays bounded by the distinct n-grams.
        keys_acc = np.empty(0, dtype=np.uint64)
        df_acc = np.empty(0, dtype=np.int64)
        chunk: list[np.ndarray] = []
        for n, i in enumerate(idx, 1):
            chunk.append(self._row_counts(data, i)[0])
            if len(chunk) == 64 or n == len(idx):
                merged = np.concatenate([keys_acc, *chunk])
                weights = np.concatenate([df_acc, np.ones(sum(len(c) for c in chunk), dtype=np.int64)])
                keys_acc, inverse = np.unique(merged, return_inverse=True)
                df_acc = np.bincount(inverse, weights=weights).astype(np.int64)
                chunk = []
        keep = df_acc >= min(self.min_df, max(1, len(idx) // 2))
        keys_acc, df_acc = keys_acc[keep], df_acc[keep]
        if len(keys_acc) > self.max_features:
            # Most frequent first, ties broken by key so the choice is deterministic.
            top = np.lexsort((keys_acc, -df_acc))[: self.max_features]
            keys_acc = keys_acc[top]
        self.vocabulary_ = np.sort(keys_acc)
        return self

    def transform(self, data: SequenceData, idx: np.ndarray) -> sp.csr_matrix:
        if self.vocabulary_ is None:
            raise RuntimeError("NgramFeaturizer.transform before fit")
        vocab = self.vocabulary_
        indptr, cols, vals = [0], [], []
        for i in idx:
            keys, counts = self._row_counts(data, i)
            pos = np.searchsorted(vocab, keys)
            pos_clipped = np.minimum(pos, max(len(vocab) - 1, 0))
            known = (
                (pos < len(vocab)) & (vocab[pos_clipped] == keys) if len(vocab) else np.zeros(len(keys), bool)
            )
            cols.append(pos[known])
            vals.append(counts[known])
            indptr.append(indptr[-1] + int(known.sum()))
        return sp.csr_matrix(
            (
                np.concatenate(vals).astype(np.float32) if vals else np.empty(0, np.float32),
                np.concatenate(cols) if cols else np.empty(0, np.int64),
                np.asarray(indptr),
            ),
            shape=(len(idx), len(vocab)),
        )


def _binary_labels(data: SequenceData, idx: np.ndarray) -> np.ndarray:
    y = np.asarray(data.labels())[idx]
    if np.any((y != 0) & (y != 1)):
        raise ValueError("training rows must have labels 0 or 1")
    return y.astype(np.int64)


def _constant_if_one_class(y: np.ndarray) -> float | None:
    # A training fold with a single class cannot fit a classifier; predict that class's prior instead.
    return float(y[0]) if len(np.unique(y)) < 2 else None


class _NgramClassifier:
    """Shared by the n-gram baselines: labels, the train-only n-gram vocabulary, one-class folds.

    Subclasses say what they do with the count matrix (`_fit_counts`, `_predict_counts`)."""

    def __init__(self, seed: int = 0, max_features: int = 20_000, cache: NgramCache | None = None) -> None:
        self.seed = seed
        self.max_features = max_features
        self.cache = cache

    def fit(self, data: SequenceData, train_idx: np.ndarray):
        y = _binary_labels(data, train_idx)
        self.featurizer_ = NgramFeaturizer(max_features=self.max_features, cache=self.cache).fit(
            data, train_idx
        )
        self.constant_ = _constant_if_one_class(y)
        if self.constant_ is None:
            self._fit_counts(self.featurizer_.transform(data, train_idx), y)
        return self

    def predict_proba(self, data: SequenceData, idx: np.ndarray) -> np.ndarray:
        if self.constant_ is not None:
            return np.full(len(idx), self.constant_)
        return self._predict_counts(self.featurizer_.transform(data, idx))

    def _fit_counts(self, x, y: np.ndarray) -> None:
        raise NotImplementedError

    def _predict_counts(self, x) -> np.ndarray:
        raise NotImplementedError


class NgramLogisticRegression(_NgramClassifier):
    """n-gram counts -> sublinear tf-idf (idf from training rows) -> L2 logistic regression."""

    def _fit_counts(self, x, y: np.ndarray) -> None:
        from sklearn.feature_extraction.text import TfidfTransformer
        from sklearn.linear_model import LogisticRegression

        self.tfidf_ = TfidfTransformer(sublinear_tf=True).fit(x)
        self.model_ = LogisticRegression(
            C=1.0, class_weight="balanced", max_iter=2000, solver="liblinear", random_state=self.seed
        ).fit(self.tfidf_.transform(x), y)

    def _predict_counts(self, x) -> np.ndarray:
        return self.model_.predict_proba(self.tfidf_.transform(x))[:, 1]


class NgramLightGBM(_NgramClassifier):
    """The same n-gram counts, raw, into gradient-boosted trees."""

    def __init__(
        self, seed: int = 0, max_features: int = 20_000, cache: NgramCache | None = None, n_jobs: int = 1
    ) -> None:
        super().__init__(seed, max_features, cache)
        self.n_jobs = n_jobs

    def _fit_counts(self, x, y: np.ndarray) -> None:
        from lightgbm import LGBMClassifier

        self.model_ = LGBMClassifier(
            n_estimators=300,
            learning_rate=0.05,
            num_leaves=31,
            min_child_samples=5,
            colsample_bytree=0.5,
            class_weight="balanced",
            random_state=self.seed,
            n_jobs=self.n_jobs,
            verbose=-1,
        ).fit(x, y)

    def _predict_counts(self, x) -> np.ndarray:
        return self.model_.predict_proba(x)[:, 1]


# The audit's column names (corpus manifest) where the dataset's files table names a column differently.
_DATASET_COLUMN = {"instruction_count": "n_instructions"}
# The trace stage calls 32-bit x86 "x86"; PE metadata (and the audit's fixed codes) call it "i386".
_ARCH_ALIASES = {"x86": "i386"}


class MetadataBaseline:
    """Shortcut audit: the corpus stage's metadata-only classifier (`MetadataShortcutClassifier`, small
    LightGBM trees) behind the file-classifier interface, never reading a trace's content.

    It uses the audit's features (arch, kind, size, linker version, section and import counts, trace
    length, stop reason) from `data.files`; a dataset alone has only arch, kind, trace length and stop
    reason, the rest arrive when the corpus manifest is joined (`runtrace evaluate --manifest`).  Missing
    columns are unknown values, which the trees ignore; `features_available_` says which were present.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _features(self, data: SequenceData, idx: np.ndarray) -> tuple[np.ndarray, list[str]]:
        from runtrace.corpus.audit import BASE_FEATURES, TRACE_FEATURES, metadata_features

        rows = data.files.take(pa.array(np.asarray(idx, dtype=np.int64)))
        wanted = [{"trace_length": "instruction_count"}.get(f, f) for f in (*BASE_FEATURES, *TRACE_FEATURES)]
        columns = {}
        for name in wanted:
            source = name if name in rows.column_names else _DATASET_COLUMN.get(name)
            values = rows.column(source).to_pylist() if source in rows.column_names else [None] * len(rows)
            if name == "arch":
                values = [_ARCH_ALIASES.get(v, v) for v in values]
            columns[name] = values
        return metadata_features(pa.table(columns), include_trace=True)

    def fit(self, data: SequenceData, train_idx: np.ndarray) -> MetadataBaseline:
        from runtrace.corpus.audit import MetadataShortcutClassifier

        x, names = self._features(data, train_idx)
        self.features_available_ = [n for n, col in zip(names, x.T, strict=True) if not np.isnan(col).all()]
        self.model_ = MetadataShortcutClassifier(feature_names=names, random_state=self.seed)
        self.model_.fit(x, _binary_labels(data, train_idx))
        return self

    def predict_proba(self, data: SequenceData, idx: np.ndarray) -> np.ndarray:
        x, _ = self._features(data, idx)
        return self.model_.predict_proba(x)[:, 1]
