"""Turning command-line paths (PE files, directories, zip archives) into samples to trace.

Bad paths do not raise: they become `InputProblem`s, so one unreadable entry never stops a batch.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    sha256: str
    name: str  # what the user recognises: a path, or "archive.zip:member"
    read: Callable[[], bytes]


@dataclass(frozen=True)
class InputProblem:
    name: str
    message: str


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sample(path: Path) -> Sample | InputProblem:
    try:
        data = path.read_bytes()
    except OSError as e:
        return InputProblem(str(path), f"cannot read: {e.strerror or e}")
    return Sample(sha256_of(data), str(path), lambda d=data: d)


def _zip_samples(path: Path, password: str | None) -> Iterator[Sample | InputProblem]:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        yield InputProblem(str(path), f"unreadable zip archive: {e}")
        return
    with archive:
        if password:
            archive.setpassword(password.encode())
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = f"{path}:{info.filename}"
            try:
                data = archive.read(info)
            except RuntimeError as e:  # zipfile's way of saying the password is missing or wrong
                msg = str(e)
                if "password" in msg.lower():
                    msg = "wrong or missing password (--password)"
                yield InputProblem(name, msg)
                continue
            except (OSError, zipfile.BadZipFile, NotImplementedError, EOFError) as e:
                yield InputProblem(name, f"cannot extract: {e}")
                continue
            yield Sample(sha256_of(data), name, lambda d=data: d)


def walk(paths: list[Path]) -> Iterator[Path | InputProblem]:
    """Files in argument order, directories walked in sorted order; a missing path is a problem."""
    for path in paths:
        if not path.exists():
            yield InputProblem(str(path), "no such file or directory")
        elif path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def iter_samples(paths: list[Path], password: str | None = None) -> Iterator[Sample | InputProblem]:
    """Samples in argument order; directories are walked in sorted order; zips are opened."""
    for item in walk(paths):
        if isinstance(item, InputProblem):
            yield item
        else:
            yield from _one(item, password)


def _one(path: Path, password: str | None) -> Iterator[Sample | InputProblem]:
    if path.suffix.lower() == ".zip" or _looks_like_zip(path):
        yield from _zip_samples(path, password)
    else:
        yield _file_sample(path)


def _looks_like_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"PK\x03\x04" and zipfile.is_zipfile(path)
    except OSError:
        return False
