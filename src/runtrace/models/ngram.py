"""Token n-gram counts and gradient-boosted trees on them: the `ngram-lgbm` model, defined once for the
evaluation (`runtrace evaluate -m ngram-lgbm`), for training a shippable model (`runtrace train --kind
ngram-lgbm`, `ngram_checkpoint`) and, through its ONNX graph (`ngram_export`), for scanning.

Features: every 1-, 2- and 3-gram of a file's token sequence (ISM instruction and API tokens, or BSM
blocks and API calls, as the dataset's lexicon ids) counted; the vocabulary is the `MAX_FEATURES`
n-grams found in the most training files (at least `MIN_DF` of them), chosen in `fit` from the training
rows only.  Trees: LightGBM with `LGBM_PARAMS` on the raw counts, either free (`ngram-lgbm`) or with every
count constrained to raise the score (`ngram-lgbm-monotone`, the default model's kind).

The scanner imports this module for `ngram_keys` and `ngram_spans` (numpy only): scipy, scikit-learn and
LightGBM are imported inside the functions that need them, never here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from runtrace.models.inner_select import select
from runtrace.models.weights import mass_balanced

if TYPE_CHECKING:  # the interface imports pyarrow, which scanning does without (about 0.1 s)
    from runtrace.models.interface import SequenceData

ORDERS = (1, 2, 3)
MAX_FEATURES = 20_000
MIN_DF = 2
# LightGBM's settings (`LGBMClassifier` keywords; the seed and thread count are the caller's).
LGBM_PARAMS = {
    "n_estimators": 300,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 5,
    "colsample_bytree": 0.5,
    "class_weight": "balanced",
    "verbose": -1,
}

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_FILTER_BITS = 20  # `vocabulary_columns`' filter: 2**20 buckets (1 MiB), a few per vocabulary n-gram
_FILTER_SHIFT = np.uint64(64 - _FILTER_BITS)


def exact_keys(token_space: int, orders: tuple[int, ...]) -> bool:
    """Whether `ngram_keys` numbers n-grams exactly (else by a 64-bit hash) for this many token ids."""
    return token_space ** max(orders) * len(orders) < 2**63


def ngram_keys(tokens: np.ndarray, vocab_size: int, orders: tuple[int, ...]) -> np.ndarray:
    """One uint64 key per n-gram occurrence, for every order in `orders` (in that order, each order's
    n-grams in sequence order: `ngram_spans` says where each starts).

    Ids at or above `vocab_size - 1` all read as `vocab_size - 1`.  Keys are exact (a mixed-radix number,
    offset per order) when the id space allows, else a 64-bit multiplicative hash whose collisions are
    negligible at the vocabulary sizes kept.
    """
    t = np.minimum(np.asarray(tokens, dtype=np.uint64), np.uint64(vocab_size - 1))
    exact = exact_keys(vocab_size, orders)
    parts = []
    offset = 0
    # Exact keys of order n extend those of order n - 1 by one digit (key_n[i] = key_{n-1}[i] * V +
    # t[i + n - 1]): one pass per order up to the largest, not n passes for each order (long traces).
    radix = np.uint64(vocab_size)
    prefix, prefix_order = t, 1
    for n in orders:
        if len(t) < n:
            offset += vocab_size**n
            continue
        if exact:
            if prefix_order > n:  # orders not ascending: start again from the tokens
                prefix, prefix_order = t, 1
            while prefix_order < n:
                prefix = prefix[:-1] * radix + t[prefix_order:]
                prefix_order += 1
            parts.append(prefix[: len(t) - n + 1] + np.uint64(offset))
            offset += vocab_size**n
        else:
            key = np.full(len(t) - n + 1, np.uint64(n), dtype=np.uint64)
            with np.errstate(over="ignore"):
                for j in range(n):  # in place: no temporary the size of the trace per step
                    np.bitwise_xor(key, t[j : len(t) - n + 1 + j], out=key)
                    np.multiply(key, _GOLDEN, out=key)
            parts.append(key)
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)


def ngram_spans(length: int, orders: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(first position, order) of each key `ngram_keys` returns for a sequence of `length` tokens."""
    counts = [max(length - n + 1, 0) for n in orders]
    starts = (
        np.concatenate([np.arange(c, dtype=np.int64) for c in counts]) if orders else np.empty(0, np.int64)
    )
    sizes = np.repeat(np.asarray(orders, dtype=np.int64), counts)
    return starts, sizes


class CountCache(Protocol):
    """Per-row n-gram counts kept between featurizers (the evaluation's `NgramCache`)."""

    def key(self, data: SequenceData, i: int): ...

    def get(self, key): ...

    def put(self, key, value: tuple[np.ndarray, np.ndarray]) -> None: ...


class NgramFeaturizer:
    """Token n-gram counts with a vocabulary chosen on the training rows: the `max_features` n-grams
    found in the most training files (at least `min_df` of them).

    Fitted: `vocabulary_` (sorted uint64 keys; a key's column is its position) and `token_space_` (the
    training data's lexicon size + 1: ids are digits of that radix, and a token the lexicon lacks reads as
    the last one, which no training row has)."""

    def __init__(
        self,
        orders: tuple[int, ...] = ORDERS,
        max_features: int = MAX_FEATURES,
        min_df: int = MIN_DF,
        cache: CountCache | None = None,
    ) -> None:
        self.orders = orders
        self.max_features = max_features
        self.min_df = min_df
        self.cache = cache
        self.vocabulary_: np.ndarray | None = None
        self.token_space_: int | None = None

    def _row_counts(self, data: SequenceData, i: int) -> tuple[np.ndarray, np.ndarray]:
        key = self.cache.key(data, i) if self.cache is not None else None
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
        self.token_space_ = len(data.lexicon) + 1
        return self

    def transform(self, data: SequenceData, idx: np.ndarray):
        """scipy CSR matrix (len(idx), len(vocabulary_)) of float32 counts."""
        import scipy.sparse as sp

        if self.vocabulary_ is None:
            raise RuntimeError("NgramFeaturizer.transform before fit")
        vocab = self.vocabulary_
        indptr, cols, vals = [0], [], []
        for i in idx:
            keys, counts = self._row_counts(data, i)
            known = vocabulary_columns(vocab, keys)
            hit = known >= 0
            cols.append(known[hit])
            vals.append(counts[hit])
            indptr.append(indptr[-1] + int(hit.sum()))
        return sp.csr_matrix(
            (
                np.concatenate(vals).astype(np.float32) if vals else np.empty(0, np.float32),
                np.concatenate(cols) if cols else np.empty(0, np.int64),
                np.asarray(indptr),
            ),
            shape=(len(idx), len(vocab)),
        )


def vocabulary_columns(vocabulary: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The column (position in the sorted `vocabulary`) of each key, -1 for keys outside it."""
    out = np.full(len(keys), -1, dtype=np.int64)
    if not len(vocabulary) or not len(keys):
        return out
    # Most keys of a long trace are outside the vocabulary: a one-bit-per-bucket filter of the
    # vocabulary's hashed keys rules them out with one table lookup each, and only the rest are
    # searched for (a binary search of every key took seconds on a 10-million-instruction trace).
    with np.errstate(over="ignore"):
        table = np.zeros(1 << _FILTER_BITS, dtype=bool)
        table[(vocabulary * _GOLDEN) >> _FILTER_SHIFT] = True
        candidates = np.flatnonzero(table[(keys * _GOLDEN) >> _FILTER_SHIFT])
    wanted = keys[candidates]
    pos = np.minimum(np.searchsorted(vocabulary, wanted), len(vocabulary) - 1)
    found = vocabulary[pos] == wanted
    out[candidates[found]] = pos[found]
    return out


def binary_labels(data: SequenceData, idx: np.ndarray) -> np.ndarray:
    y = np.asarray(data.labels())[idx]
    if np.any((y != 0) & (y != 1)):
        raise ValueError("training rows must have labels 0 or 1")
    return y.astype(np.int64)


def constant_if_one_class(y: np.ndarray) -> float | None:
    # A training fold with a single class cannot fit a classifier; predict that class's prior instead.
    return float(y[0]) if len(np.unique(y)) < 2 else None


class NgramClassifier:
    """Shared by the n-gram models: labels, the train-only n-gram vocabulary, one-class folds.

    Subclasses say what they do with the count matrix (`_fit_counts`, `_predict_counts`)."""

    def __init__(
        self, seed: int = 0, max_features: int = MAX_FEATURES, cache: CountCache | None = None
    ) -> None:
        self.seed = seed
        self.max_features = max_features
        self.cache = cache

    def fit(self, data: SequenceData, train_idx: np.ndarray, sample_weight: np.ndarray | None = None):
        """`sample_weight` (one per training file, optional): the classes are then balanced by their
        weights' sum rather than by their file counts (`weights.mass_balanced`)."""
        y = binary_labels(data, train_idx)
        self.featurizer_ = NgramFeaturizer(max_features=self.max_features, cache=self.cache).fit(
            data, train_idx
        )
        self.constant_ = constant_if_one_class(y)
        if self.constant_ is None:
            weight = None if sample_weight is None else mass_balanced(y, sample_weight)
            self._fit_counts(self.featurizer_.transform(data, train_idx), y, weight)
        return self

    def predict_proba(self, data: SequenceData, idx: np.ndarray) -> np.ndarray:
        if self.constant_ is not None:
            return np.full(len(idx), self.constant_)
        return self._predict_counts(self.featurizer_.transform(data, idx))

    def _fit_counts(self, x, y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        """Fit on the counts; without `sample_weight` balance the classes by count, with it use the weights
        as given (already class-balanced by mass)."""
        raise NotImplementedError

    def _predict_counts(self, x) -> np.ndarray:
        raise NotImplementedError


class NgramLightGBM(NgramClassifier):
    """The n-gram counts, raw, into gradient-boosted trees (`LGBM_PARAMS`).

    params: LightGBM settings that replace `LGBM_PARAMS` entries.  candidates: settings to choose among
    on the training files alone (`inner_select.select`: grouped folds by the dataset's groups, partial
    ROC-AUC at low FPR), each a dict of LightGBM settings laid over the others; the choice and each
    candidate's score are in `selection_`."""

    kind = "ngram-lgbm"
    monotone = False

    def __init__(
        self,
        seed: int = 0,
        max_features: int = MAX_FEATURES,
        cache: CountCache | None = None,
        n_jobs: int = 1,
        params: dict | None = None,
        candidates: Sequence[dict] | None = None,
    ) -> None:
        super().__init__(seed, max_features, cache)
        self.n_jobs = n_jobs
        self.params = dict(params or {})
        self.candidates = [dict(c) for c in candidates or ()]

    def fit(self, data: SequenceData, train_idx: np.ndarray, sample_weight: np.ndarray | None = None):
        # The inner folds keep the dataset's groups whole.
        self._groups = np.asarray(data.groups())[np.asarray(train_idx)] if self.candidates else None
        try:
            return super().fit(data, train_idx, sample_weight)
        finally:
            del self._groups

    def _fit_counts(self, x, y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        from lightgbm import LGBMClassifier

        params = {**LGBM_PARAMS, "random_state": self.seed, "n_jobs": self.n_jobs, **self.params}
        if sample_weight is not None:
            params.pop("class_weight")  # "balanced" would reweigh by counts on top of the weights
        # One +1 per column; kept out of `params_`, which a model's config.json records.
        constraints = {"monotone_constraints": [1] * x.shape[1]} if self.monotone else {}

        def fit_predict(candidate: dict, train: np.ndarray, test: np.ndarray) -> np.ndarray:
            weight = None if sample_weight is None else mass_balanced(y[train], sample_weight[train])
            model = LGBMClassifier(**{**params, **candidate}, **constraints)
            return model.fit(x[train], y[train], sample_weight=weight).predict_proba(x[test])[:, 1]

        if self.candidates:
            self.selection_ = select(self.candidates, y, self._groups, fit_predict, weight=sample_weight)
            params.update(self.selection_.chosen)
        self.params_ = params
        self.model_ = LGBMClassifier(**params, **constraints).fit(x, y, sample_weight=sample_weight)

    def _predict_counts(self, x) -> np.ndarray:
        return self.model_.predict_proba(x)[:, 1]


class NgramLightGBMMonotone(NgramLightGBM):
    """The same trees with every n-gram count constrained to raise the score or leave it, never lower it
    (LightGBM's `monotone_constraints`, +1 on every column): the score rests on evidence of malice only.

    Two things follow.  Code the model has never seen (a new toolchain's runtime, a new program's own
    code) adds no n-gram it knows, so it cannot make a file look malicious; the unconstrained trees
    also learn that the *absence* of familiar benign code is malicious, which is how they flag benign
    programs from a source they were not trained on (`docs/results.md`, over time).  And adding code to
    a program can never lower its score, so padding malware with benign code does not evade it (the
    monotonic classifiers of Incer et al., IWSPA 2018)."""

    kind = "ngram-lgbm-monotone"
    monotone = True


# Every n-gram model `runtrace train` ships, by kind.
NGRAM_CLASSES = {cls.kind: cls for cls in (NgramLightGBM, NgramLightGBMMonotone)}
