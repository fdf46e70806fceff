"""Synthetic datasets for tests and benchmarks: no traces, no malware, fully deterministic.

Malicious files contain a short motif (ISM: two tokens; BSM: two blocks) at a few random places; benign
files never do.  The task is trivially separable, which is the point: a model that cannot learn it
is broken.  `signal=False` gives label-independent sequences (for throughput measurements).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from runtrace.represent.dataset import FILE_SCHEMA, SequenceDataset
from runtrace.represent.encode import BSM, ISM


def synthetic_dataset(
    representation: str = ISM,
    n_files: int = 40,
    *,
    min_length: int = 40,
    max_length: int = 300,
    lexicon_size: int = 60,
    n_blocks: int = 80,
    motifs: int = 3,
    signal: bool = True,
    log_lengths: bool = False,
    seed: int = 0,
) -> SequenceDataset:
    """log_lengths: lengths log-uniform in [min_length, max_length] (many short traces, a few long ones,
    as in real corpora) instead of uniform."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_files) % 2
    rng.shuffle(labels)
    alphabet = n_blocks if representation == BSM else lexicon_size
    sequences = []
    for label in labels.tolist():
        if log_lengths:
            n = int(np.exp(rng.uniform(np.log(min_length), np.log(max_length + 1))))
        else:
            n = int(rng.integers(min_length, max_length + 1))
        seq = rng.integers(2, alphabet, size=n).astype(np.int32)  # ids 0 and 1 form the motif
        if signal and label == 1:
            for at in rng.integers(0, max(n - 1, 1), size=motifs).tolist():
                seq[at : at + 2] = [0, 1][: len(seq[at : at + 2])]
        sequences.append(seq)
    offsets = np.zeros(n_files + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sequences], out=offsets[1:])
    files = pa.Table.from_pylist(
        [
            {
                "sha256": f"{i:064x}",
                "label": int(label),
                "group": f"group{i // 2}",
                "arch": "x86" if i % 3 else "amd64",
                "kind": "exe",
                "n_instructions": len(s),
                "stop_reason": "exited",
                "source": "synthetic",
                "n_tokens": len(s),
                "n_api_calls": 0,
            }
            for i, (label, s) in enumerate(zip(labels.tolist(), sequences, strict=True))
        ],
        schema=FILE_SCHEMA,
    )
    flat = np.concatenate(sequences) if sequences else np.zeros(0, np.int32)
    if representation == ISM:
        return SequenceDataset(
            ISM,
            files,
            [f"tok{i}" for i in range(lexicon_size)],
            flat.astype(np.uint16),
            offsets,
            normalisation="registers",
            api=False,
        )
    # BSM: every block is a few instruction tokens; the motif blocks use instructions no other block has.
    contents = [np.array([0, 1, 0], np.int32), np.array([1, 0, 1, 1], np.int32)]
    for _ in range(n_blocks - 2):
        contents.append(rng.integers(2, lexicon_size, size=int(rng.integers(1, 9))).astype(np.int32))
    block_offsets = np.zeros(n_blocks + 1, dtype=np.int64)
    np.cumsum([len(c) for c in contents], out=block_offsets[1:])
    return SequenceDataset(
        BSM,
        files,
        [f"b:{i:020x}" for i in range(n_blocks)],
        flat.astype(np.uint16),
        offsets,
        normalisation="registers",
        api=False,
        instruction_lexicon=[f"insn{i}" for i in range(lexicon_size)],
        block_tokens=np.concatenate(contents).astype(np.uint16),
        block_offsets=block_offsets,
    )
