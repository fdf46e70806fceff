"""Nearest-neighbour voting as a detector: a file is as malicious as the known files whose executed code
is most like its own.

The signature of a file is the MinHash (`runtrace.similar`) of the set of distinct tokens its sequence
holds: for BSM, its executed normalised blocks (the dataset's lexicon names each by its content) and its
API functions; for ISM, its distinct instruction tokens, a much coarser set.  `fit` indexes the training
fold's signatures only; `predict_proba` asks that index for each file's k nearest training files and
returns the Jaccard-weighted share of malicious ones among them, with one pseudo-neighbour of weight
`prior_weight` voting the training fold's share of malicious files (that share alone when no training
file is alike enough for the index to find).  The pseudo-neighbour is there for the ranking: without it
every file whose neighbours are all malicious scores exactly 1, however faint the likeness, and a
threshold fitted for a low false-positive rate finds no score between those ties (the first by-family
run, without it, flagged nothing); with it, closer neighbours move the score further from the prior.

A signature does not depend on the fold, so the signatures of one dataset are computed once and shared
by the folds (`SignatureCache`), as the n-gram baselines share their counts.
"""

from __future__ import annotations

import numpy as np

from runtrace.models.interface import SequenceData
from runtrace.similar.index import SimilarityIndex
from runtrace.similar.signature import NUM_PERM, CodeSignature, minhash


class SignatureCache:
    """MinHash signatures per dataset row, computed on first use."""

    def __init__(self) -> None:
        self._by_dataset: dict[int, tuple[object, np.ndarray, np.ndarray]] = {}

    def get(self, data: SequenceData, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(signatures uint32 [len(idx) x NUM_PERM], distinct tokens per row) for the rows `idx`."""
        n = len(data.files)
        # Holding the dataset keeps its id from being reused by another one.
        _, sigs, sizes = self._by_dataset.setdefault(
            id(data), (data, np.zeros((n, NUM_PERM), dtype=np.uint32), np.full(n, -1, dtype=np.int64))
        )
        for i in np.asarray(idx, dtype=np.int64):
            if sizes[i] < 0:
                distinct = np.unique(np.asarray(data.sequence(int(i))))
                sigs[i] = minhash([data.lexicon[t].encode() for t in distinct.tolist()])
                sizes[i] = len(distinct)
        return sigs[idx], sizes[idx]


class NeighbourVote:
    """k nearest training files by estimated Jaccard of executed code; their Jaccard-weighted vote."""

    def __init__(self, k: int = 5, prior_weight: float = 1.0, cache: SignatureCache | None = None) -> None:
        self.k = k
        self.prior_weight = prior_weight
        self.cache = cache

    def _signatures(self, data: SequenceData, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (self.cache or SignatureCache()).get(data, idx)

    def fit(self, data: SequenceData, train_idx: np.ndarray) -> NeighbourVote:
        train_idx = np.asarray(train_idx, dtype=np.int64)
        y = np.asarray(data.labels())[train_idx]
        if np.any((y != 0) & (y != 1)):
            raise ValueError("training rows must have labels 0 or 1")
        sigs, sizes = self._signatures(data, train_idx)
        entries = [{"row": int(i), "malicious": int(label)} for i, label in zip(train_idx, y, strict=True)]
        sizes2 = np.column_stack([sizes, np.zeros_like(sizes)])
        self.index_ = SimilarityIndex(entries, sigs, sigs, sizes2)
        self.prior_ = float(y.mean()) if len(y) else 0.5
        return self

    def predict_proba(self, data: SequenceData, idx: np.ndarray) -> np.ndarray:
        sigs, sizes = self._signatures(data, np.asarray(idx, dtype=np.int64))
        out = np.full(len(sigs), self.prior_, dtype=np.float64)
        for j, (sig, size) in enumerate(zip(sigs, sizes, strict=True)):
            found = self.index_.nearest(CodeSignature(sig, int(size), sig, 0), self.k)
            weights = np.array([n.jaccard for n in found], dtype=np.float64)
            votes = np.array([n.entry["malicious"] for n in found], dtype=np.float64)
            total = weights.sum() + self.prior_weight
            if total > 0:
                out[j] = float(((weights * votes).sum() + self.prior_weight * self.prior_) / total)
        return out
