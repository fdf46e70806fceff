"""Which windows an LSTM reads.  (How a file's score comes from its windows' outputs:
`runtrace.models.aggregation`, shared with the scanner.)  No torch: the evaluation's leaky protocol cuts
the same windows without loading it."""

from __future__ import annotations

from runtrace.models.interface import SequenceData
from runtrace.represent.encode import BSM, ISM
from runtrace.represent.windows import WindowConfig

DEFAULT_WINDOWS = {
    ISM: WindowConfig("sampled", length=512, count=8),
    BSM: WindowConfig("sampled", length=256, count=8),
}


def resolve_window_config(configured: WindowConfig | None, data: SequenceData) -> WindowConfig:
    """The configured windows, else the dataset's build-time defaults, else the representation's."""
    if configured is not None:
        return configured
    if data.window_defaults:
        return WindowConfig.from_json(data.window_defaults)
    return DEFAULT_WINDOWS[data.representation]
