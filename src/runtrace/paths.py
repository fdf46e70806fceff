"""Where runtrace keeps what it derives outside the git tree: `$XDG_CACHE_HOME/runtrace` (or
`~/.cache/runtrace`)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "runtrace"
