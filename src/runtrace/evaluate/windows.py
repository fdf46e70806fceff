"""A dataset whose rows are windows cut from files: what the leaky protocol splits.

Windows are cut by `runtrace.represent.windows.cut_windows`, with the same settings the LSTM reads
(`runtrace.models.windowing`: the dataset's build-time window defaults, else the model's), so the leaky
split shuffles the very units a paper-style evaluation would.  Every model sees the window view exactly
as it would see files (a `SequenceData`, one token sequence per row), so the same estimators run under
all protocols; each window keeps its parent file's metadata, which is what lets the report fold window
scores back into per-file figures.  The dataset-level tables and build settings are the dataset's.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from runtrace.models.interface import SequenceData, SequenceDataView
from runtrace.models.windowing import resolve_window_config
from runtrace.represent.windows import WindowConfig, cut_windows


class WindowView(SequenceDataView):
    def __init__(self, data: SequenceData, config: WindowConfig | None = None) -> None:
        self._data = data
        self.config = config or resolve_window_config(None, data)
        windows = cut_windows(data, np.arange(len(data.labels())), self.config)
        self.windows = windows
        self.parent = windows.file_index
        self.start = windows.starts
        files = data.files.take(pa.array(self.parent))
        self._files = files.append_column("parent_index", pa.array(self.parent)).append_column(
            "window_start", pa.array(self.start)
        )
        self._labels = np.asarray(data.labels())[self.parent]
        self._groups = np.asarray(data.groups(), dtype=object)[self.parent]

    def __len__(self) -> int:
        return len(self.parent)

    # --- SequenceData: one row per window -------------------------------------------------------------
    @property
    def files(self) -> pa.Table:
        return self._files

    def labels(self) -> np.ndarray:
        return self._labels

    def groups(self) -> np.ndarray:
        return self._groups

    def sequence(self, i: int) -> np.ndarray:
        return self.windows.tokens(self._data, int(i))
