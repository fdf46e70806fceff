"""A view of a dataset that shows a model only the rows it is allowed to see.

During `fit` a model gets the training rows; during `predict_proba` the rows it must score.  Reading the
sequence of any other row raises `LeakError`, and labels of other rows read as -1, so a model that builds
its vocabulary, normalisation statistics or early-stopping split from the whole dataset fails loudly
instead of quietly inflating its figures.  Attributes the view does not know are passed through to the
underlying dataset (they are outside the guarded interface).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from runtrace.evaluate.interfaces import SequenceData

HIDDEN_LABEL = -1


class LeakError(RuntimeError):
    """A model touched a row outside the ones it was given."""


class GuardedView:
    def __init__(self, data: SequenceData, allowed: np.ndarray, purpose: str) -> None:
        self._data = data
        self._purpose = purpose
        n = len(data.labels())
        self._allowed = np.zeros(n, dtype=bool)
        self._allowed[np.asarray(allowed, dtype=np.int64)] = True
        labels = np.asarray(data.labels()).copy()
        show_labels = purpose == "fit"  # scoring never needs a label
        labels[~self._allowed if show_labels else slice(None)] = HIDDEN_LABEL
        self._labels = labels
        files = data.files
        if "label" in files.column_names:
            files = files.set_column(
                files.column_names.index("label"), "label", pa.array(labels.astype(np.int64))
            )
        self.files = files
        self.representation = data.representation
        self.lexicon = data.lexicon

    @property
    def unguarded(self) -> SequenceData:
        return self._data

    def labels(self) -> np.ndarray:
        return self._labels

    def groups(self) -> np.ndarray:
        return self._data.groups()

    def check_access(self, i: int) -> None:
        if not self._allowed[int(i)]:
            raise LeakError(f"model read row {int(i)} during {self._purpose}, outside the rows it was given")

    def sequence(self, i: int) -> np.ndarray:
        self.check_access(i)
        return self._data.sequence(i)

    def __getattr__(self, name: str):
        # Only called for attributes not defined above: pass through the rest of the dataset's surface.
        # Private names are not forwarded (and must not recurse while unpickling, before _data exists).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._data, name)
