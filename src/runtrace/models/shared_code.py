"""The toolchain ablation: remove code both classes share, then classify what is left.

Compilers and linkers put the same code in benign programs and malware alike: C runtime start-up,
security cookies, heap and locale set-up, static library routines.  An emulated trace spends much of
its length there (a short trace may be nothing else), so a detector can score well by recognising the
*toolchain* that built a file rather than what the file does.  `SharedCodeFilter` measures how much of a
model's figure rests on such code: it learns, from the training files of a fold only, which blocks
occur in a large share of the files of *both* classes, deletes every visit to them from every sequence
(training and scored files alike), and hands the rest to an inner `FileClassifier`.

What counts as shared code:
- only code blocks are candidates (BSM lexicon entries named by their normalised content, `b:...`): API
  calls and their argument classes are behaviour, the thing the ablation is meant to leave;
- a block is shared when it occurs in at least `min_share` of the malicious training files *and* in at
  least `min_share` of the benign ones.  Occurrence is per file (a block run once or a million times
  counts once), so a long loop in a few files does not make a block "common";
- a fold with no training file of one class removes nothing (there is nothing to share with).

Only BSM: an ISM token is a single normalised instruction (`mov reg, reg`), and nearly every one occurs
in nearly every file of both classes, so "shared by both classes" would remove the representation
itself rather than the toolchain; a block is the smallest unit in which a compiler's routine is
recognisable, and an ISM dataset keeps no block boundaries to map it back to.

Why it cannot leak: the shares are counted in `fit`, over `train_idx` and the labels of those rows only
(the evaluation's guarded view hides every other label and refuses every other row); `predict_proba`
applies the fitted set and learns nothing.  A block seen only in scored files is never a candidate.

A file whose every item is shared has nothing left to classify.  Such files are kept out of the inner
model's training (an LSTM cannot read an empty sequence) and are scored with the malicious share among
the training files that were emptied, pulled towards the training prior by one pseudo-file (the prior
itself when no training file was emptied), so every file still gets a score.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from runtrace.models.interface import FileClassifier, SequenceData, SequenceDataView
from runtrace.models.names import DEFAULT_MIN_SHARE
from runtrace.represent.names import BSM

BLOCK_PREFIX = "b:"  # `represent.encode.block_key`: what names a code block in a BSM lexicon
TOP_REMOVED = 5  # removed blocks listed in the summary, the most executed first


def code_blocks(lexicon) -> np.ndarray:
    """Boolean per lexicon id: a code block (not an API call or argument-class pseudo-block)."""
    return np.fromiter((t.startswith(BLOCK_PREFIX) for t in lexicon), dtype=bool, count=len(lexicon))


class FilteredView(SequenceDataView):
    """`data` with every visit to the items `removed` marks deleted, order kept.  Reads go through
    `data`, so a guarded view behind it still guards every row."""

    def __init__(self, data: SequenceData, removed: np.ndarray) -> None:
        self._data = data
        self._keep = ~removed

    @property
    def files(self):
        return self._data.files

    def labels(self) -> np.ndarray:
        return self._data.labels()

    def groups(self) -> np.ndarray:
        return self._data.groups()

    def sequence(self, i: int) -> np.ndarray:
        seq = np.asarray(self._data.sequence(i))
        return seq[self._keep[seq]]


class SharedCodeFilter(BaseEstimator):
    """A `FileClassifier` that removes the code blocks shared by both classes of its training files
    (at least `min_share` of each class's files) before `inner` sees any sequence.

    Fitted attributes: `removed_` (lexicon ids removed, ascending), `removed_keys_` (their block keys,
    the dataset-independent identity a scanner would need), `empty_score_` (the score of a file left
    empty), `shared_code_` (counts and shares for the report; see `_measure`)."""

    def __init__(self, inner: FileClassifier, min_share: float = DEFAULT_MIN_SHARE) -> None:
        self.inner = inner
        self.min_share = min_share

    def fit(self, data: SequenceData, train_idx: np.ndarray) -> SharedCodeFilter:
        if data.representation != BSM:
            raise ValueError(f"SharedCodeFilter needs BSM data (blocks), not {data.representation!r}")
        if not 0.0 < self.min_share <= 1.0:
            raise ValueError(f"min_share must be in (0, 1], not {self.min_share}")
        train_idx = np.asarray(train_idx, dtype=np.int64)
        y = np.asarray(data.labels())[train_idx]
        if np.any((y != 0) & (y != 1)):
            raise ValueError("training rows must have labels 0 or 1")
        n_items = len(data.lexicon)
        code = code_blocks(data.lexicon)

        # Files per class in which each item occurs.
        present = np.zeros((2, n_items), dtype=np.int64)
        for i, label in zip(train_idx.tolist(), y.tolist(), strict=True):
            present[label, np.unique(np.asarray(data.sequence(i)))] += 1
        n_class = np.bincount(y, minlength=2)
        removed = np.zeros(n_items, dtype=bool)
        if n_class.min() > 0:
            share = present / n_class[:, None]
            removed = code & (share[0] >= self.min_share) & (share[1] >= self.min_share)
        self.removed_ = np.flatnonzero(removed)
        self.removed_keys_ = [data.lexicon[k] for k in self.removed_.tolist()]
        self._mask = removed
        # Instructions per item, for the share of executed code removed (API pseudo-blocks hold none).
        sizes = np.diff(data.block_offsets) if data.block_offsets is not None else None
        self._sizes = None if sizes is None else np.where(code, sizes, 0)

        lengths, measured, hits = self._measure(data, train_idx, "train")
        empty = lengths == 0
        prior = float(y.mean()) if len(y) else 0.5
        self.empty_score_ = float((y[empty].sum() + prior) / (empty.sum() + 1))
        kept = train_idx[~empty]
        self.inner_fitted_ = len(kept) > 0
        if self.inner_fitted_:
            self.inner.fit(FilteredView(data, removed), kept)
        self.shared_code_ = {
            "min_share": float(self.min_share),
            "code_blocks_seen": int((code & (present.sum(axis=0) > 0)).sum()),
            "removed_blocks": len(self.removed_),
            **measured,
            "top_removed": _top_removed(data, self.removed_, hits, measured["train_positions"]),
        }
        return self

    def predict_proba(self, data: SequenceData, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        if len(data.lexicon) != len(self._mask):
            raise ValueError("predict_proba on data with another lexicon than the one fitted on")
        lengths, measured, _ = self._measure(data, idx, "scored")
        scores = np.full(len(idx), self.empty_score_, dtype=np.float64)
        kept = lengths > 0
        if self.inner_fitted_ and kept.any():
            scores[kept] = self.inner.predict_proba(FilteredView(data, self._mask), idx[kept])
        # The last scoring's shares: in an evaluation, the test fold's (scored after any threshold set).
        self.shared_code_ = {**self.shared_code_, **measured}
        return scores

    def _measure(
        self, data: SequenceData, rows: np.ndarray, which: str
    ) -> tuple[np.ndarray, dict, np.ndarray]:
        """Each row's length once filtered; how much of the rows' sequences the removal took: the share
        of their positions (executed blocks and API items), the share of the instructions those executed
        blocks hold (where the data has block contents), and how many files it emptied; and how many
        positions each removed block (in `removed_` order) accounts for."""
        lengths = np.zeros(len(rows), dtype=np.int64)
        hits = np.zeros(len(self.removed_), dtype=np.int64)
        positions = removed_positions = 0
        instructions = removed_instructions = 0
        sizes = self._sizes
        for j, i in enumerate(rows.tolist()):
            seq = np.asarray(data.sequence(i))
            hit = self._mask[seq]
            n_hit = int(hit.sum())
            lengths[j] = len(seq) - n_hit
            hits += np.bincount(np.searchsorted(self.removed_, seq[hit]), minlength=len(hits))
            positions += len(seq)
            removed_positions += n_hit
            if sizes is not None:
                instructions += int(sizes[seq].sum())
                removed_instructions += int(sizes[seq[hit]].sum())
        return (
            lengths,
            {
                f"{which}_files": len(rows),
                f"{which}_positions": positions,
                f"{which}_positions_removed": removed_positions / positions if positions else 0.0,
                f"{which}_instructions_removed": (
                    removed_instructions / instructions if instructions else None
                ),
                f"{which}_files_emptied": int((lengths == 0).sum()),
            },
            hits,
        )


def _top_removed(data: SequenceData, removed: np.ndarray, hits: np.ndarray, positions: int) -> list[dict]:
    """The removed blocks that took the most training positions: their instructions and that share."""
    out = []
    for j in np.argsort(-hits, kind="stable")[:TOP_REMOVED].tolist():
        if hits[j] == 0:
            break
        k = int(removed[j])
        code = data.lexicon[k]
        if data.block_offsets is not None:
            tokens = data.block_flat[data.block_offsets[k] : data.block_offsets[k + 1]]
            code = "; ".join(data.instruction_lexicon[int(t)] for t in tokens)
        out.append({"block": code, "share": float(hits[j] / positions)})
    return out
