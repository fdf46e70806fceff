"""A tiny in-memory stand-in for `runtrace.represent.dataset.SequenceDataset`, and spy estimators, for
the evaluation tests.  Same attributes as the real class; sequences are synthetic token ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

LEXICON = [f"tok{i}" for i in range(16)]


class FakeSequenceDataset:
    """A `runtrace.models.interface.SequenceData` without blocks (ISM-like whatever its representation:
    no LSTM reads it)."""

    normalisation = "registers"
    api = True
    api_args = False
    max_tokens = None
    min_instructions = None
    window_defaults: dict = {}
    block_flat = None
    block_offsets = None

    def __init__(self, representation: str, files: pa.Table, sequences: list[np.ndarray], lexicon: list[str]):
        self.representation = representation
        self.files = files
        self.lexicon = lexicon
        self.instruction_lexicon = lexicon
        self._sequences = sequences

    def labels(self) -> np.ndarray:
        return np.asarray(self.files.column("label").to_pylist(), dtype=np.int64)

    def groups(self) -> np.ndarray:
        return np.asarray(self.files.column("group").to_pylist(), dtype=object)

    def sequence(self, i: int) -> np.ndarray:
        return self._sequences[int(i)]

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(self.files, path / "files.parquet")
        np.savez(path / "sequences.npz", *self._sequences)
        (path / "meta.json").write_text(
            json.dumps({"representation": self.representation, "lexicon": self.lexicon})
        )

    @classmethod
    def load(cls, path: Path) -> FakeSequenceDataset:
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        with np.load(path / "sequences.npz") as z:
            sequences = [z[f"arr_{i}"] for i in range(len(z.files))]
        return cls(meta["representation"], pq.read_table(path / "files.parquet"), sequences, meta["lexicon"])


def make_dataset(
    n_files: int = 60,
    n_groups: int = 12,
    signal: float = 0.6,
    seed: int = 0,
    representation: str = "ism",
    length: tuple[int, int] = (80, 400),
) -> FakeSequenceDataset:
    """Malicious files over-use tokens 1-3 (with probability `signal` per position); files of one group
    share a label, like a malware family or a benign package."""
    rng = np.random.default_rng(seed)
    group_label = np.arange(n_groups) % 2
    group_of = np.arange(n_files) % n_groups
    labels = group_label[group_of]
    sequences = []
    for i in range(n_files):
        n = int(rng.integers(*length))
        seq = rng.integers(4, len(LEXICON), size=n)
        if labels[i] == 1:
            hot = rng.random(n) < signal
            seq[hot] = rng.integers(1, 4, size=int(hot.sum()))
        sequences.append(seq.astype(np.int32))
    files = pa.table(
        {
            "sha256": [f"{i:064x}" for i in range(n_files)],
            "label": labels.tolist(),
            "group": [f"g{g}" for g in group_of],
            "arch": ["amd64" if i % 3 == 0 else "i386" for i in range(n_files)],
            "kind": ["dll" if i % 4 == 0 else "exe" for i in range(n_files)],
            "n_instructions": [int(len(s)) * 10 for s in sequences],
            "n_api_calls": [int(len(s)) // 4 for s in sequences],
            "stop_reason": ["exited" if i % 5 else "instruction_cap" for i in range(n_files)],
        }
    )
    return FakeSequenceDataset(representation, files, sequences, list(LEXICON))


class SpyEstimator:
    """Records every fit and scoring call; scores come from a fixed per-row table (or the label)."""

    calls: list[tuple[str, np.ndarray]] = []

    def __init__(self, fixed_scores: np.ndarray | None = None, touch_all: bool = False) -> None:
        self.fixed_scores = fixed_scores
        self.touch_all = touch_all

    def fit(self, data, train_idx):
        SpyEstimator.calls.append(("fit", np.asarray(train_idx).copy()))
        rows = range(len(data.labels())) if self.touch_all else train_idx
        for i in rows:
            data.sequence(i)  # a leaky model would build its vocabulary over every row like this
        return self

    def predict_proba(self, data, idx):
        SpyEstimator.calls.append(("predict", np.asarray(idx).copy()))
        if self.fixed_scores is not None:
            return self.fixed_scores[np.asarray(idx)]
        return np.asarray([min(1.0, len(data.sequence(i)) / 500) for i in idx])
