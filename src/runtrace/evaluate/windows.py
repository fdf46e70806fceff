"""A dataset whose rows are windows cut from files: what the leaky protocol splits.

Windows are cut by `runtrace.represent.windows.cut_windows`, with the same settings the LSTM reads
(the dataset's build-time window defaults, else the model's), so the leaky split shuffles the very units
a paper-style evaluation would.  Every model sees the window view exactly as it would see files (one
token sequence per row), so the same estimators run under all protocols; each window keeps its parent
file's metadata, which is what lets the report fold window scores back into per-file figures.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from runtrace.evaluate.interfaces import SequenceData
from runtrace.represent.windows import WindowConfig, cut_windows


def default_window_config(data: SequenceData) -> WindowConfig:
    """The windows an LSTM trained on `data` would read."""
    defaults = getattr(data, "window_defaults", None)
    if defaults:
        return WindowConfig.from_json(defaults)
    # Imported here: the models package pulls in torch, which baseline-only runs do not need.
    from runtrace.models.windowing import DEFAULT_WINDOWS

    return DEFAULT_WINDOWS[data.representation]


class WindowView:
    def __init__(self, data: SequenceData, config: WindowConfig | None = None) -> None:
        self.source = data  # models look through `.source` for dataset-level tables (BSM blocks)
        self.config = config or default_window_config(data)
        self.representation = data.representation
        self.lexicon = data.lexicon
        windows = cut_windows(data, np.arange(len(data.labels())), self.config)
        self.windows = windows
        self.parent = windows.file_index
        self.start = windows.starts
        files = data.files.take(pa.array(self.parent))
        self.files = files.append_column("parent_index", pa.array(self.parent)).append_column(
            "window_start", pa.array(self.start)
        )
        self._labels = np.asarray(data.labels())[self.parent]
        self._groups = np.asarray(data.groups(), dtype=object)[self.parent]

    def __len__(self) -> int:
        return len(self.parent)

    def labels(self) -> np.ndarray:
        return self._labels

    def groups(self) -> np.ndarray:
        return self._groups

    def sequence(self, i: int) -> np.ndarray:
        return self.windows.tokens(self.source, int(i))
