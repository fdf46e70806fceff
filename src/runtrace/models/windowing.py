"""Which windows an LSTM reads.  (How a file's score comes from its windows' outputs:
`runtrace.models.aggregation`, shared with the scanner.)"""

from __future__ import annotations

from runtrace.models.batching import find_attribute
from runtrace.represent.encode import BSM, ISM
from runtrace.represent.windows import WindowConfig

DEFAULT_WINDOWS = {
    ISM: WindowConfig("sampled", length=512, count=8),
    BSM: WindowConfig("sampled", length=256, count=8),
}


def resolve_window_config(configured: WindowConfig | None, data, representation: str) -> WindowConfig:
    """The configured windows, else the dataset's build-time defaults, else the representation's."""
    if configured is not None:
        return configured
    defaults = find_attribute(data, "window_defaults") if data is not None else None
    if defaults:
        return WindowConfig.from_json(defaults)
    return DEFAULT_WINDOWS[representation]
