"""From windows to tensors: window stores, length bucketing, and the BSM distinct-block trick.

A `WindowStore` copies the tokens of a set of windows into one flat array, once, reading each file
through the dataset's public interface (`sequence(i)`, or `sequence_slice` on a real `SequenceDataset`).
Every batch is then a vectorised numpy gather from that array: nothing loops over tokens in Python, and
an evaluation wrapper that checks which rows a model reads sees exactly the rows it was given.

Windows of similar length are batched together (sorted within chunks, then the batches shuffled), so
padding stays small while the order still changes every epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from runtrace.models.interface import SequenceData
from runtrace.models.spec import MAX_BLOCK_TOKENS, OOV, PAD, block_rows
from runtrace.represent.dataset import SequenceDataset
from runtrace.represent.encode import BSM
from runtrace.represent.vocabulary import Vocabulary
from runtrace.represent.windows import Windows


@dataclass
class DatasetTables:
    """The dataset-level dictionaries a model needs besides the sequences (no per-file data)."""

    representation: str
    lexicon: Sequence[str]  # token id -> string (BSM: block keys)
    instruction_lexicon: Sequence[str]  # ISM: the lexicon
    block_flat: np.ndarray | None  # BSM: instruction ids of every block key, concatenated
    block_offsets: np.ndarray | None
    normalisation: str
    api: bool

    @classmethod
    def of(cls, data: SequenceData) -> DatasetTables:
        if data.representation == BSM and (data.block_flat is None or data.block_offsets is None):
            raise ValueError("a BSM dataset without its blocks' instructions (block_flat, block_offsets)")
        offsets = data.block_offsets
        return cls(
            data.representation,
            data.lexicon,
            data.instruction_lexicon,
            data.block_flat,
            None if offsets is None else np.asarray(offsets, dtype=np.int64),
            data.normalisation,
            data.api,
        )


@dataclass
class WindowStore:
    """The tokens of a set of windows, contiguous: window k is flat[offsets[k]:offsets[k+1]]."""

    windows: Windows
    flat: np.ndarray  # int32 lexicon ids
    offsets: np.ndarray  # int64, len(windows) + 1

    @classmethod
    def build(cls, data: SequenceData, windows: Windows) -> WindowStore:
        offsets = np.zeros(len(windows) + 1, dtype=np.int64)
        np.cumsum(windows.lengths, out=offsets[1:])
        flat = np.zeros(int(offsets[-1]), dtype=np.int32)
        direct = isinstance(data, SequenceDataset)
        # Read each file once however many windows it has.
        order = np.argsort(windows.file_index, kind="stable")
        bounds = np.flatnonzero(np.diff(windows.file_index[order])) + 1
        for group in np.split(order, bounds) if len(order) else []:
            row = int(windows.file_index[group[0]])
            sequence = None if direct else np.asarray(data.sequence(row))
            for k in group.tolist():
                start, length = int(windows.starts[k]), int(windows.lengths[k])
                part = (
                    data.sequence_slice(row, start, start + length)
                    if direct
                    else sequence[start : start + length]
                )
                flat[offsets[k] : offsets[k + 1]] = part
        return cls(windows, flat, offsets)

    def __len__(self) -> int:
        return len(self.windows)

    def subset(self, positions: np.ndarray) -> WindowStore:
        positions = np.asarray(positions, dtype=np.int64)
        windows = self.windows.subset(positions)
        offsets = np.zeros(len(positions) + 1, dtype=np.int64)
        np.cumsum(windows.lengths, out=offsets[1:])
        flat = gather_padded(
            self.flat, self.offsets[positions], windows.lengths, int(windows.lengths.max(initial=0))
        )
        return WindowStore(windows, flat[flat >= 0].astype(np.int32), offsets)

    def tokens(self, k: int) -> np.ndarray:
        return self.flat[self.offsets[k] : self.offsets[k + 1]]

    def documents(self) -> list[np.ndarray]:
        """One array per file: the tokens of all its windows (what a vocabulary counts)."""
        docs: dict[int, list[np.ndarray]] = {}
        for k in range(len(self)):
            docs.setdefault(int(self.windows.file_index[k]), []).append(self.tokens(k))
        return [np.concatenate(parts) for parts in docs.values()]


def gather_padded(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """(len(starts), width) int64 of flat[starts[k] : starts[k] + lengths[k]], -1 beyond each length."""
    steps = np.arange(width, dtype=np.int64)
    mask = steps[None, :] < lengths[:, None]
    out = np.full(mask.shape, -1, dtype=np.int64)
    if mask.any():
        out[mask] = flat[(starts[:, None] + steps[None, :])[mask]]
    return out


def length_batches(
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None,
    bucket: bool,
    chunk_batches: int = 64,
) -> list[np.ndarray]:
    """Positions 0..n-1 cut into batches.  With rng: shuffled; with bucket: sorted by length within
    chunks of `chunk_batches` batches, so each batch holds similar lengths.  Without rng (prediction):
    sorted by length over everything, which minimises padding."""
    n = len(lengths)
    if rng is None:
        order = np.argsort(-lengths, kind="stable") if bucket else np.arange(n)
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    order = rng.permutation(n)
    if bucket:
        chunk = batch_size * chunk_batches
        parts = []
        for i in range(0, n, chunk):
            part = order[i : i + chunk]
            parts.append(part[np.argsort(-lengths[part], kind="stable")])
        order = np.concatenate(parts) if parts else order
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng.shuffle(batches)
    return batches


def file_batches(
    windows: Windows, batch_size: int, rng: np.random.Generator, bucket: bool, chunk_files: int = 64
) -> list[np.ndarray]:
    """Batches of whole files (attention training): window positions, every window of a file in the
    same batch.  A file with more windows than a batch holds contributes an evenly spaced subset."""
    order = np.argsort(windows.file_index, kind="stable")
    bounds = np.flatnonzero(np.diff(windows.file_index[order])) + 1
    per_file = [
        w if len(w) <= batch_size else w[np.round(np.linspace(0, len(w) - 1, batch_size)).astype(int)]
        for w in np.split(order, bounds)
    ]
    tokens = np.array([windows.lengths[w].sum() for w in per_file])
    # Files in random order, sorted by size within chunks (less padding), packed greedily; the batches
    # are shuffled again at the end.
    file_order = rng.permutation(len(per_file))
    if bucket:
        chunks = np.array_split(file_order, max(1, math.ceil(len(file_order) / chunk_files)))
        file_order = np.concatenate([c[np.argsort(-tokens[c], kind="stable")] for c in chunks])
    batches, current, size = [], [], 0
    for f in file_order.tolist():
        if current and size + len(per_file[f]) > batch_size:
            batches.append(np.concatenate(current))
            current, size = [], 0
        current.append(per_file[f])
        size += len(per_file[f])
    if current:
        batches.append(np.concatenate(current))
    rng.shuffle(batches)
    return batches


class WindowEncoder:
    """Turns a batch of stored windows into the keyword arguments of IsmLstmNet / BsmLstmNet.

    Batches come back sorted longest first (what packing likes); `order` says which store position
    each row came from.
    """

    def __init__(
        self,
        tables: DatasetTables,
        vocabulary: Vocabulary,
        block_vocabulary: Vocabulary | None = None,
        max_block_tokens: int = MAX_BLOCK_TOKENS,
    ) -> None:
        self.tables = tables
        self.bsm = tables.representation == BSM
        self.insn_table = vocabulary.lookup_table(tables.instruction_lexicon)
        self.block_table = (
            block_vocabulary.lookup_table(tables.lexicon) if (self.bsm and block_vocabulary) else None
        )
        self.max_block_tokens = max_block_tokens

    def encode(
        self, store: WindowStore, positions: np.ndarray, device: torch.device
    ) -> tuple[dict, np.ndarray]:
        lengths = store.windows.lengths[positions]
        order = np.argsort(-lengths, kind="stable")
        positions = np.asarray(positions)[order]
        lengths = lengths[order]
        # An empty trace is one window of length 0; the LSTM needs at least one step, so it reads one
        # OOV token: "nothing executed" is information, not an error.
        run_lengths = np.maximum(lengths, 1)
        ids = gather_padded(store.flat, store.offsets[positions], lengths, int(run_lengths.max()))
        empty = lengths == 0
        if self.bsm:
            inputs = self._bsm_inputs(ids, empty)
        else:
            tokens = np.where(ids >= 0, self.insn_table[np.maximum(ids, 0)], PAD)
            tokens[empty, 0] = OOV
            inputs = {"tokens": tokens}
        inputs["lengths"] = run_lengths
        return {k: torch.as_tensor(v, dtype=torch.int64).to(device) for k, v in inputs.items()}, positions

    def _bsm_inputs(self, ids: np.ndarray, empty: np.ndarray) -> dict:
        real = ids >= 0
        distinct, inverse = np.unique(ids[real], return_inverse=True)
        positions = np.zeros(ids.shape, dtype=np.int64)
        positions[real] = inverse + 1
        insn, insn_lengths = self._block_matrix(distinct)
        block_ids = (
            self.block_table[distinct] if self.block_table is not None else np.zeros(len(distinct), np.int64)
        )
        if empty.any():
            # The empty window's one step reads an extra all-OOV block.
            positions[empty, 0] = len(distinct) + 1
            insn = np.vstack([insn, np.full((1, insn.shape[1]), PAD, np.int64)])
            insn[-1, 0] = OOV
            insn_lengths = np.append(insn_lengths, 1)
            block_ids = np.append(block_ids, OOV)
        return {"insn": insn, "insn_lengths": insn_lengths, "block_ids": block_ids, "positions": positions}

    def _block_matrix(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Instruction vocabulary ids of the given block keys, (U, L) with L <= max_block_tokens."""
        off = self.tables.block_offsets
        rows, lengths = block_rows(
            self.tables.block_flat, off[keys], off[keys + 1] - off[keys], self.max_block_tokens
        )
        return np.where(rows >= 0, self.insn_table[np.maximum(rows, 0)], PAD), lengths
