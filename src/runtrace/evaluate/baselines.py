"""Baselines that stand beside the LSTMs in every run, behind the same fit / predict_proba interface.

- opcode n-gram counts (1- to 3-grams over the token sequence) + logistic regression, the classic
  alternative to a sequence model;
- LightGBM on the same counts (`runtrace.models.ngram.NgramLightGBM`, defined with the n-gram features in
  `runtrace.models.ngram` because `runtrace train --kind ngram-lgbm` ships it as a scannable model);
- a metadata-only "shortcut audit": if a model that sees only architecture, exe/dll, size, section
  count, trace length and stop reason scores close to the LSTM, the corpus is confounded.

Everything learnt from data (the n-gram vocabulary, tf-idf weights, category codes) is learnt in `fit`
from the training rows only.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from runtrace.evaluate.guard import GuardedView
from runtrace.models.interface import SequenceData
from runtrace.models.ngram import (  # noqa: F401  (NgramFeaturizer, NgramLightGBM, ngram_keys: re-exported)
    NgramClassifier,
    NgramFeaturizer,
    NgramLightGBM,
    binary_labels,
    ngram_keys,
)


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
        # Counts are cached against the dataset behind a guarded view, shared by every fold's view.
        if isinstance(data, GuardedView):
            data.check_access(i)  # a cache hit must not bypass the guard
            data = data.dataset
        self._datasets.setdefault(id(data), data)
        return id(data), int(i)

    def get(self, key: tuple):
        return self._rows.get(key)

    def put(self, key: tuple, value: tuple[np.ndarray, np.ndarray]) -> None:
        size = value[0].nbytes + value[1].nbytes
        if self._bytes + size <= self.max_bytes:
            self._rows[key] = value
            self._bytes += size


class NgramLogisticRegression(NgramClassifier):
    """n-gram counts -> sublinear tf-idf (idf from training rows) -> L2 logistic regression."""

    def _fit_counts(self, x, y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        from sklearn.feature_extraction.text import TfidfTransformer
        from sklearn.linear_model import LogisticRegression

        self.tfidf_ = TfidfTransformer(sublinear_tf=True).fit(x)
        self.model_ = LogisticRegression(
            C=1.0,
            class_weight="balanced" if sample_weight is None else None,
            max_iter=2000,
            solver="liblinear",
            random_state=self.seed,
        ).fit(self.tfidf_.transform(x), y, sample_weight=sample_weight)

    def _predict_counts(self, x) -> np.ndarray:
        return self.model_.predict_proba(self.tfidf_.transform(x))[:, 1]


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
        self.model_.fit(x, binary_labels(data, train_idx))
        return self

    def predict_proba(self, data: SequenceData, idx: np.ndarray) -> np.ndarray:
        x, _ = self._features(data, idx)
        return self.model_.predict_proba(x)[:, 1]
