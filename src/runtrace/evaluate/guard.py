"""A view of a dataset that shows a model only the rows it is allowed to see.

During `fit` a model gets the training rows; during `predict_proba` the rows it must score.  Reading the
sequence of any other row raises `LeakError`, and labels of other rows read as -1, so a model that builds
its vocabulary, normalisation statistics or early-stopping split from the whole dataset fails loudly
instead of quietly inflating its figures.  The view is a `SequenceData` (`runtrace.models.interface`):
the dataset-level tables and build settings (lexicons, BSM block contents, normalisation, ...) are
forwarded one by one, never the rest of the dataset.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from runtrace.models.interface import SequenceData, SequenceDataView

HIDDEN_LABEL = -1


class LeakError(RuntimeError):
    """A model touched a row outside the ones it was given."""


class GuardedView(SequenceDataView):
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
        self._files = files

    @property
    def dataset(self) -> SequenceData:
        """The data behind the guard (for caches keyed by it; reading rows through it is not guarded)."""
        return self._data

    # --- SequenceData: per-file data, guarded ----------------------------------------------------------
    @property
    def files(self) -> pa.Table:
        return self._files

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
