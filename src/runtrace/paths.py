"""Where runtrace keeps what it derives outside the git tree (`$XDG_CACHE_HOME/runtrace`, or
`~/.cache/runtrace`), and where the package's bundled data is."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "runtrace"


def data_dir() -> Path:
    """The package's bundled data (the default model, the demo traces)."""
    return Path(__file__).resolve().parent / "data"


def default_model_dir() -> Path:
    """The bundled model `scan` and `serve` use unless told otherwise."""
    return data_dir() / "models" / "default"


def short_names(names: list[str], cwd: Path | None = None) -> list[str]:
    """Names for a table at 80 columns that still tell every input apart: paths relative to the working
    directory, then only as many trailing parts as make each name unique in the list (two `app.exe`
    from different folders keep their folders); a sha256 file name cut to its first 12 digits.

    A name may be `archive.zip:member`; the member's own folders count as parts."""
    cwd = cwd or Path.cwd()
    parts = [_parts(name, cwd) for name in names]
    out = []
    for mine in parts:
        keep = 1
        while keep < len(mine) and any(other != mine and other[-keep:] == mine[-keep:] for other in parts):
            keep += 1
        out.append("/".join(_short_part(p) for p in mine[-keep:]))
    return out


def _parts(name: str, cwd: Path) -> list[str]:
    path, colon, member = name.partition(":") if not _is_drive(name) else (name, "", "")
    if path.startswith("/") and Path(path).is_relative_to(cwd):
        path = str(Path(path).relative_to(cwd))
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if colon:
        parts[-1:] = [f"{parts[-1]}:{member.split('/')[0]}" if parts else member.split("/")[0]]
        parts += [p for p in member.split("/")[1:] if p]
    return parts or [name]


def _is_drive(name: str) -> bool:
    return len(name) > 1 and name[1] == ":" and name[0].isalpha()


def _short_part(part: str) -> str:
    stem, dot, suffix = part.partition(".")
    if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem.lower()):
        return f"{stem[:12]}…{dot}{suffix}"
    return part
