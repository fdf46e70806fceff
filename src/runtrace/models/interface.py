"""The two structural types every model and every evaluation is written against.

`SequenceData` is what a model reads from a dataset: `runtrace.represent.dataset.SequenceDataset`
itself, or one of the evaluation's views of it (`evaluate.guard.GuardedView`, which shows a model only
the rows it was given; `evaluate.windows.WindowView`, the leaky protocol's windows as rows), each of
which gives its own rows and forwards the dataset-level members explicitly (`SequenceDataView`).  Nothing
else is read: a model never looks behind a view.

`FileClassifier` is what a model is, LSTMs and baselines alike: `fit` / `predict_proba`, scikit-learn
style, so the evaluation treats them all the same.  `train_idx` / `idx` are row indices of `data.files`;
whatever a model learns (vocabularies, normalisation statistics, early stopping) comes from `train_idx`
only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa


class SequenceData(Protocol):
    """One token sequence per file, with the dataset-level tables and settings a model needs."""

    @property
    def representation(self) -> str:
        """ "ism" or "bsm"."""

    @property
    def files(self) -> pa.Table:
        """One row per file: sha256, label, group, arch, kind, n_instructions, stop_reason, ..."""

    @property
    def lexicon(self) -> Sequence[str]:
        """Token id -> token string (BSM: block keys)."""

    @property
    def instruction_lexicon(self) -> Sequence[str]:
        """Instruction token strings (ISM: the lexicon itself)."""

    @property
    def block_flat(self) -> np.ndarray | None:
        """BSM: the instruction ids of every block key, concatenated (block k is
        block_flat[block_offsets[k] : block_offsets[k + 1]]); None for ISM."""

    @property
    def block_offsets(self) -> np.ndarray | None: ...

    # How the sequences were built: a model records it, and refuses data built another way.
    @property
    def normalisation(self) -> str: ...

    @property
    def api(self) -> bool: ...

    @property
    def api_args(self) -> bool:
        """API calls are followed by their argument-class tokens (`runtrace.represent.apiargs`)."""

    @property
    def max_tokens(self) -> int | None:
        """Sequences were cut after this many tokens (ISM) or blocks (BSM); None: whole traces."""

    @property
    def min_instructions(self) -> int | None:
        """Traces that executed fewer instructions were left out (`dataset build --min-instructions`);
        None where the dataset does not say."""

    @property
    def window_defaults(self) -> dict:
        """Window settings chosen when the dataset was built (`WindowConfig.to_json()`), or {}."""

    def labels(self) -> np.ndarray:
        """1 malicious, 0 benign, per file (a guarded view shows -1 where a label is hidden)."""

    def groups(self) -> np.ndarray:
        """The origin group (malware family, benign package) per file."""

    def sequence(self, i: int) -> np.ndarray:
        """File i's whole sequence of lexicon ids."""


class SequenceDataView:
    """Base of a view that shows a `SequenceData` with rows of its own (the evaluation's guarded and
    window views): the dataset-level tables and build settings are the dataset's, forwarded here one by
    one, in one place; a subclass sets `_data` and gives `files`, `labels`, `groups` and `sequence`."""

    _data: SequenceData

    @property
    def representation(self) -> str:
        return self._data.representation

    @property
    def lexicon(self) -> Sequence[str]:
        return self._data.lexicon

    @property
    def instruction_lexicon(self) -> Sequence[str]:
        return self._data.instruction_lexicon

    @property
    def block_flat(self) -> np.ndarray | None:
        return self._data.block_flat

    @property
    def block_offsets(self) -> np.ndarray | None:
        return self._data.block_offsets

    @property
    def normalisation(self) -> str:
        return self._data.normalisation

    @property
    def api(self) -> bool:
        return self._data.api

    @property
    def api_args(self) -> bool:
        return self._data.api_args

    @property
    def max_tokens(self) -> int | None:
        return self._data.max_tokens

    @property
    def min_instructions(self) -> int | None:
        return self._data.min_instructions

    @property
    def window_defaults(self) -> dict:
        return self._data.window_defaults


@runtime_checkable
class FileClassifier(Protocol):
    def fit(self, data: SequenceData, train_idx: np.ndarray) -> FileClassifier:
        """Learn from the files `train_idx` of `data` (and nothing else); returns self."""
        ...

    def predict_proba(self, data: SequenceData, idx: np.ndarray) -> np.ndarray:
        """P(malicious) for each file in `idx`, shape (len(idx),), float64 in [0, 1]."""
        ...
