"""An n-gram model (`ngram-lgbm` or `ngram-lgbm-monotone`) trained on every file of a dataset and saved as
a model directory: what `runtrace train --kind ngram-lgbm` runs.  The ONNX graph the scanner runs is
written afterwards by `runtrace.models.ngram_export`, as `runtrace.models.export` does for the sequence
kinds.

The directory (file names: `runtrace.models.spec`) holds what the evaluation's `NgramLightGBM` learnt,
cut to what scoring a new trace needs:

- `model.lgbm.txt`: the booster, in LightGBM's text format (no pickle); its sha256 is the model's
  identity in every scan result;
- `vocabulary.json`: the n-grams of the fitted vocabulary that the trees split on (`ngrams`, sorted uint64
  keys as `ngram_keys` computes them, and `columns`, each one's feature index in the booster), and every
  token of those n-grams (`tokens`, the strings, with `token_ids`, their ids in the training dataset's
  lexicon, the digits of the keys).  An n-gram the trees never split on changes no prediction; a token
  outside `tokens` reads as the unknown id (`token_space - 1`), so every n-gram through it falls outside
  the vocabulary, exactly as n-grams of tokens the trees never split on do;
- `config.json`: kind, representation, the featurizer's settings, LightGBM's parameters, the training
  data's settings, shortest trace and tracer revisions (`data`, as for every kind) and the fit's figures.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtrace.models.interface import SequenceData
from runtrace.models.ngram import NGRAM_CLASSES, NgramLightGBM, binary_labels, ngram_keys, ngram_spans
from runtrace.models.provenance import training_data_spec
from runtrace.models.spec import CONFIG, FORMAT_NAME, FORMAT_VERSION, NGRAM_GRAPHS, NGRAM_WEIGHTS, VOCABULARY


@dataclass(frozen=True)
class NgramTrainingSummary:
    kind: str
    files: int
    trees: int
    vocabulary: int  # n-grams in the fitted vocabulary (the booster's features)
    used: int  # of them, the ones the trees split on: what the graph reads
    tokens: int  # distinct tokens in those n-grams
    seconds: float  # counting, choosing the vocabulary and fitting the trees
    tokens_per_s: float  # training tokens counted per second of that


def train_and_save(
    data: SequenceData,
    out: str | os.PathLike,
    seed: int = 0,
    n_jobs: int = 1,
    weights: np.ndarray | None = None,
    weighting: str | None = None,
    kind: str = NgramLightGBM.kind,
) -> NgramTrainingSummary:
    """Fit the n-gram model `kind` (`NGRAM_CLASSES`: the evaluation's model of that name, same features and
    parameters) on every file of `data` and save it to `out`.  With `weights` (one per file; `weighting`
    says what they are, for the model's config), files of weight 0 are left out and the others weigh as
    given.  ValueError when the files kept are not of both classes."""
    idx = np.arange(len(data.labels()))
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        idx = idx[weights > 0]
    y = binary_labels(data, idx)
    if len(np.unique(y)) < 2:
        left = "" if weights is None else f" (weighted: {len(idx)} of {len(weights)} files weigh more than 0)"
        raise ValueError(f"{kind} needs training files of both classes (malicious and benign){left}")
    started = time.perf_counter()
    sample_weight = None if weights is None else weights[idx]
    clf = NGRAM_CLASSES[kind](seed=seed, n_jobs=n_jobs).fit(data, idx, sample_weight=sample_weight)
    seconds = time.perf_counter() - started
    n_tokens = int(sum(len(data.sequence(int(i))) for i in idx))
    training = {
        "files": len(idx),
        "malicious": int(y.sum()),
        "benign": int(len(y) - y.sum()),
        "tokens": n_tokens,
        "seconds": round(seconds, 3),
    }
    if weights is not None:
        training["weighting"] = {"by": weighting, "files_left_out": int(len(weights) - len(idx))}
    written = save(clf, data, idx, out, training)
    return NgramTrainingSummary(
        kind=clf.kind,
        files=len(idx),
        trees=clf.model_.booster_.num_trees(),
        vocabulary=len(clf.featurizer_.vocabulary_),
        used=len(written["ngrams"]),
        tokens=len(written["tokens"]),
        seconds=seconds,
        tokens_per_s=n_tokens / max(seconds, 1e-9),
    )


def save(
    clf: NgramLightGBM, data: SequenceData, idx: np.ndarray, out: str | os.PathLike, training: dict
) -> dict:
    """Write a fitted `NgramLightGBM` as a model directory (graph not yet exported); `data` and `idx` are
    its training rows, read again for the tokens of the n-grams kept.  Returns the vocabulary written."""
    import lightgbm

    if getattr(clf, "constant_", None) is not None or not hasattr(clf, "model_"):
        raise ValueError("the model has no trees to save (fitted on one class)")
    featurizer = clf.featurizer_
    booster = clf.model_.booster_
    # The booster's feature i is the vocabulary's column i (`NgramFeaturizer.transform`).
    columns = np.flatnonzero(booster.feature_importance(importance_type="split") > 0)
    keys = featurizer.vocabulary_[columns]  # sorted: the vocabulary is, and columns ascend
    token_ids = _tokens_of(data, idx, keys, featurizer.token_space_, featurizer.orders)
    vocabulary = {
        "tokens": [data.lexicon[int(i)] for i in token_ids],
        "token_ids": token_ids.tolist(),
        "ngrams": [int(k) for k in keys],
        "columns": columns.tolist(),
    }
    config = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "kind": clf.kind,
        "representation": data.representation,
        "featurizer": {
            "orders": list(featurizer.orders),
            "token_space": int(featurizer.token_space_),
            "max_features": featurizer.max_features,
            "min_df": featurizer.min_df,
            "vocabulary": len(featurizer.vocabulary_),
            "used": len(keys),
            "tokens": len(token_ids),
        },
        "lightgbm": {
            **clf.params_,
            "monotone": clf.monotone,  # every column constrained to raise the score (NgramLightGBMMonotone)
            "trees": booster.num_trees(),
            "version": lightgbm.__version__,
        },
        "data": training_data_spec(data).to_json(),
        "training": training,
    }
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    (root / NGRAM_WEIGHTS).write_text(booster.model_to_string())
    (root / VOCABULARY).write_text(json.dumps(vocabulary))
    (root / CONFIG).write_text(json.dumps(config, indent=1, sort_keys=True))
    for name in NGRAM_GRAPHS.values():  # a graph of earlier trees: export writes the new one
        (root / name).unlink(missing_ok=True)
    return vocabulary


def _tokens_of(
    data: SequenceData, idx: np.ndarray, keys: np.ndarray, token_space: int, orders: tuple[int, ...]
) -> np.ndarray:
    """The token ids (sorted) that make up the n-grams `keys`, found where they occur in the rows `idx`
    (hashed keys cannot be decoded, so they are looked up where they occur)."""
    seen = np.zeros(token_space, dtype=bool)
    found = np.zeros(len(keys), dtype=bool)
    for i in idx:
        seq = data.sequence(int(i)).astype(np.int64)
        row = ngram_keys(seq, token_space, orders)
        pos = np.minimum(np.searchsorted(keys, row), max(len(keys) - 1, 0))
        hit = (keys[pos] == row) if len(keys) else np.zeros(len(row), dtype=bool)
        if not hit.any():
            continue
        found[pos[hit]] = True
        starts, sizes = ngram_spans(len(seq), orders)
        starts, sizes = starts[hit], sizes[hit]
        for j in range(max(orders)):
            inside = j < sizes
            seen[seq[starts[inside] + j]] = True
    if not found.all():
        raise RuntimeError(f"{int((~found).sum())} n-grams of the vocabulary occur in no training row")
    return np.flatnonzero(seen)
