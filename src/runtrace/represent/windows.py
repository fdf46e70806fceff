"""Cutting long sequences into windows that remember which file they came from.

Traces run from a few hundred to millions of instructions; an LSTM reads windows of a fixed length.
A window is only (file, start, length) — the tokens stay in the dataset's flat array until a batch
needs them — and every window carries its file's row index, so file-level scores and grouped splits
are always possible.

Modes:
- `sliding`: windows of `length` every `stride` tokens (stride = length: no overlap), plus one window
  aligned to the end so the tail is covered; `max_windows` keeps an evenly spaced subset per file.
- `first-n`: the first `length` tokens only (what a quick scan of a program's start sees).
- `sampled`: `count` windows spread evenly over the whole run (start, middle, end), deterministic, so
  long traces cost a bounded amount and unpacking stubs do not hide what runs later.
A sequence no longer than `length` is always one window holding all of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from runtrace.represent.names import WINDOW_MODES


@dataclass(frozen=True)
class WindowConfig:
    mode: str = "sampled"
    length: int = 512
    stride: int | None = None  # sliding: step between window starts; None = length
    count: int = 8  # sampled: windows per file
    max_windows: int | None = None  # sliding: at most this many per file (evenly spaced)

    def __post_init__(self) -> None:
        if self.mode not in WINDOW_MODES:
            raise ValueError(f"window mode must be one of {', '.join(WINDOW_MODES)}, not {self.mode!r}")
        if self.length < 1:
            raise ValueError("window length must be at least 1")
        if self.stride is not None and self.stride < 1:
            raise ValueError("window stride must be at least 1")
        if self.count < 1 or (self.max_windows is not None and self.max_windows < 1):
            raise ValueError("window count must be at least 1")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> WindowConfig:
        return cls(**{k: obj[k] for k in ("mode", "length", "stride", "count", "max_windows") if k in obj})


def _evenly(values: np.ndarray, k: int) -> np.ndarray:
    if len(values) <= k:
        return values
    return values[np.round(np.linspace(0, len(values) - 1, k)).astype(np.int64)]


def window_starts(n: int, config: WindowConfig) -> np.ndarray:
    """Start offsets of the windows of a sequence of n tokens (window length: min(n, config.length))."""
    length = config.length
    if n <= length or config.mode == "first-n":
        return np.zeros(1, dtype=np.int64)
    last = n - length
    if config.mode == "sampled":
        # Evenly spread and ascending; rounding can repeat a start when count > last + 1.  (Not np.unique,
        # see encode.distinct_blocks.)
        starts = np.round(np.linspace(0, last, config.count)).astype(np.int64)
        return starts[np.concatenate(([True], starts[1:] != starts[:-1]))]
    starts = np.arange(0, last + 1, config.stride or length, dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, last)
    return starts if config.max_windows is None else _evenly(starts, config.max_windows)


@dataclass
class Windows:
    """A set of windows over a dataset: parallel arrays, one entry per window."""

    file_index: np.ndarray  # int64 row of the dataset's file table (not a position in some idx)
    starts: np.ndarray  # int64 offset of the window in its file's sequence
    lengths: np.ndarray  # int64 tokens in the window (0 only for an empty sequence)

    def __len__(self) -> int:
        return len(self.file_index)

    def subset(self, positions: np.ndarray) -> Windows:
        positions = np.asarray(positions)
        return Windows(self.file_index[positions], self.starts[positions], self.lengths[positions])

    def tokens(self, data, k: int) -> np.ndarray:
        """Token ids (dataset lexicon) of window k."""
        start, stop = int(self.starts[k]), int(self.starts[k] + self.lengths[k])
        if hasattr(data, "sequence_slice"):  # a SequenceDataset reads only the window from its memory map
            return data.sequence_slice(int(self.file_index[k]), start, stop)
        return np.asarray(data.sequence(int(self.file_index[k]))[start:stop], dtype=np.int32)

    def arrays(self, data) -> list[np.ndarray]:
        """Token ids of every window (materialises them: meant for small sets and inspection)."""
        return [self.tokens(data, k) for k in range(len(self))]

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())

    def files(self) -> np.ndarray:
        """Distinct file rows, in order of first appearance."""
        _, first = np.unique(self.file_index, return_index=True)
        return self.file_index[np.sort(first)]


def sequence_lengths(data, idx: np.ndarray) -> np.ndarray:
    """Sequence length of the files idx.  Any object with `sequence(i)` works (views, wrappers that
    check which rows are read); a `SequenceDataset` answers from its offsets without reading tokens.
    (Duck-typed rather than an isinstance check so that scanning never imports the dataset module and
    pyarrow.)"""
    if hasattr(data, "sequence_slice"):
        return data.lengths()[idx]
    return np.fromiter((len(data.sequence(int(i))) for i in idx), dtype=np.int64, count=len(idx))


def cut_windows(data, idx: np.ndarray, config: WindowConfig) -> Windows:
    """Windows of the files `idx` (rows of `data`), in file order then start order."""
    idx = np.asarray(idx, dtype=np.int64)
    seq_lengths = sequence_lengths(data, idx)
    files, starts, lengths = [], [], []
    for row, n in zip(idx.tolist(), seq_lengths.tolist(), strict=True):
        s = window_starts(n, config)
        files.append(np.full(len(s), row, dtype=np.int64))
        starts.append(s)
        lengths.append(np.minimum(n - s, config.length))
    if not files:
        empty = np.zeros(0, dtype=np.int64)
        return Windows(empty, empty.copy(), empty.copy())
    return Windows(np.concatenate(files), np.concatenate(starts), np.concatenate(lengths))
