"""Scoring one encoded trace: windows -> input vectors -> window logits -> P(malicious)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runtrace.scan.onnxmodel import OnnxModel, WindowOutputs
from runtrace.scan.sequence import ModelSequence


@dataclass
class WindowBatch:
    """The model's input for one file: every window, padded, as rows of item ids and vectors."""

    items: np.ndarray  # (n_items, in_dim) input vector of each lexicon item (+ the baseline, last row)
    item_ids: np.ndarray  # (B, T) item index per step; the baseline row for an empty window; -1 padding
    positions: np.ndarray  # (B, T) sequence position per step, -1 for padding (and the empty window)
    lengths: np.ndarray  # (B,) steps the LSTM reads (>= 1)

    @property
    def baseline_id(self) -> int:
        return len(self.items) - 1

    def vectors(self) -> np.ndarray:
        """(B, T, in_dim); padding reads the baseline row, which never reaches a real output."""
        return self.items[np.where(self.item_ids >= 0, self.item_ids, self.baseline_id)]


def window_batch(model: OnnxModel, seq: ModelSequence) -> WindowBatch:
    enc = seq.encoded
    items = np.vstack([model.item_vectors(enc.lexicon, enc.block_contents), model.baseline_vector()[None, :]])
    positions = seq.window_positions()
    # A -1 sentinel after the sequence is what padding reads (also for an empty sequence).
    padded = np.append(enc.sequence.astype(np.int64), -1)
    item_ids = padded[np.where(positions >= 0, positions, len(padded) - 1)]
    lengths = seq.lengths.copy()
    empty = lengths == 0
    if empty.any():
        # Nothing executed is one step reading an unknown item, as the torch encoder does.
        item_ids[empty, 0] = len(items) - 1
        lengths[empty] = 1
    return WindowBatch(items, item_ids, positions, lengths)


@dataclass
class Score:
    probability: float
    outputs: WindowOutputs
    batch: WindowBatch
    probability_map: Callable | None = None  # the model's (`OnnxModel.probability_map`)

    def positions_scored(self) -> int:
        """Distinct sequence positions inside the scored windows."""
        positions = self.batch.positions
        return int(np.count_nonzero(np.bincount(positions[positions >= 0])))

    def window_probabilities(self) -> np.ndarray:
        """Each window's own P(malicious), in window order (mapped as the file's is)."""
        p = 1.0 / (1.0 + np.exp(-self.outputs.logits))
        return p if self.probability_map is None else self.probability_map(p)


def score_sequence(model: OnnxModel, seq: ModelSequence) -> Score:
    batch = window_batch(model, seq)
    outputs = model.window_outputs(batch.vectors(), batch.lengths)
    return Score(model.probability(outputs), outputs, batch, model.probability_map)
