"""Where the corpus lives: the user cache dir, far from the git tree, and a content-addressed sample store.

Samples never go inside the repository (live malware must never be committed), so every default here
points under `$XDG_CACHE_HOME/runtrace` (or `~/.cache/runtrace`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from runtrace.paths import cache_root

MANIFEST_NAME = "manifest.parquet"
SKIPPED_NAME = "skipped.jsonl"


def default_corpus_dir() -> Path:
    return cache_root() / "corpus"


def default_downloads_dir() -> Path:
    return cache_root() / "downloads"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def repo_root() -> Path | None:
    """The checkout this module runs from, if it runs from one (src layout: <repo>/src/runtrace/...)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "runtrace").is_dir():
            return parent
    return None


def refuse_inside_repo(path: Path, what: str) -> None:
    """Samples inside the checkout could end up committed; refuse that outright."""
    root = repo_root()
    if root is None:
        return
    resolved = path.resolve()
    if resolved == root or root in resolved.parents:
        raise ValueError(f"{what} {path} is inside the git checkout {root}; samples must live outside it")


class SampleStore:
    """Files named by their sha256 under `<corpus>/samples/ab/abcdef...`; writing is atomic and idempotent."""

    def __init__(self, corpus_dir: Path) -> None:
        self.root = corpus_dir / "samples"

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, sha256: str, data: bytes) -> Path:
        path = self.path_for(sha256)
        if path.is_file() and path.stat().st_size == len(data):
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename so an interrupted build never leaves a truncated sample under a valid name.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # Read-only: a stored sample is evidence, and nothing should ever need to modify (or run) it.
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
        return path

    def link(self, sha256: str, source: Path) -> Path:
        """The file at `source` (a sample of another store, already named by its sha256) in this store:
        hard-linked where the disk allows, copied otherwise."""
        path = self.path_for(sha256)
        if path.is_file() and path.stat().st_size == source.stat().st_size:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-link-{sha256}"
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:
            return self.put(sha256, source.read_bytes())
        os.replace(tmp, path)
        return path
