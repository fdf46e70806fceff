"""An ablation dataset: a built ISM or BSM dataset with every token dropped but the API calls (and their
argument classes, where the dataset has them) — what the program asked Windows to do, without the code
its compiler wrote.  Files, labels, groups, lexicon and block tables are kept, so `runtrace evaluate` forms
exactly the same folds on it as on the source dataset and the two can be compared fold by fold.

    .venv/bin/python scripts/api_only_dataset.py SOURCE_DATASET OUT_DATASET
    runtrace evaluate --dataset OUT_DATASET -r bsm -p by-family -m ngram-lgbm --manifest ...

Why a script and not a `dataset build` option: it is an experiment (`docs/results.md`, "API calls
alone"), not a representation `train` and `scan` support.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from runtrace.represent.dataset import DatasetError, SequenceDataset
from runtrace.represent.normalise import api_token

API_PREFIX = api_token("")  # "api:"
ARGUMENT_PREFIX = "arg:"  # runtrace.represent.apiargs's tokens


def api_only(data: SequenceDataset) -> tuple[SequenceDataset, int]:
    """The dataset with only its API-call and argument-class tokens; (dataset, files left with none)."""
    keep_id = np.array([t.startswith((API_PREFIX, ARGUMENT_PREFIX)) for t in data.lexicon], dtype=bool)
    tokens = np.asarray(data.tokens)
    keep = keep_id[tokens] if len(tokens) else np.zeros(0, dtype=bool)
    # Kept tokens per file: a cumulative count read at each file's offsets (empty files included).
    kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    offsets = kept_before[data.offsets]
    derived = SequenceDataset(
        data.representation,
        data.files,
        data.lexicon,
        tokens[keep],
        offsets,
        normalisation=data.normalisation,
        api=data.api,
        api_args=data.api_args,
        instruction_lexicon=data.instruction_lexicon,
        block_tokens=data.block_flat,
        block_offsets=data.block_offsets,
        meta={**data.meta, "derived": "API-call tokens only (scripts/api_only_dataset.py)"},
    )
    return derived, int(np.sum(np.diff(offsets) == 0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    opts = parser.parse_args(argv)
    try:
        data = SequenceDataset.load(opts.source, mmap=False)
    except DatasetError as e:
        raise SystemExit(f"error: {e}") from None
    if not data.api:
        raise SystemExit(f"error: {opts.source}: built with --no-api, it has no API-call tokens")
    derived, empty = api_only(data)
    derived.save(opts.out)
    print(
        f"{opts.out}: {len(derived)} files, {len(data.tokens):,} tokens -> {len(derived.tokens):,} "
        f"API-call tokens; {empty} files made no API call"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
