"""Turning command-line paths (PE files, directories, zip archives) into samples to trace.

A `Sample` is a small, picklable descriptor - a file path, or an archive path with a member name and
password - never the bytes themselves: the parent of a batch only hashes each input in chunks and the
tracer child reads the bytes when it starts.  So the parent's memory does not grow with the size of the
input, and the same descriptor can be handed to a process on another machine.

Bad paths do not raise: they become `InputProblem`s, so one unreadable entry never stops a batch.  An
input over the size limit is one of those problems, found from its size alone without reading it.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
DEFAULT_MAX_FILE_MB = 256
_CHUNK = 4 * MIB


class SampleReadError(OSError):
    """A sample's bytes could not be read (gone, unreadable, wrong password, larger than declared)."""


@dataclass(frozen=True)
class Sample:
    sha256: str
    name: str  # what the user recognises: a path, or "archive.zip:member"
    path: str  # the file itself, or the zip archive holding it
    member: str | None = None  # the archive member, for samples inside a zip
    password: str | None = None
    size: int = 0  # bytes, as found when the input was listed

    def _open(self):
        if self.member is None:
            return open(self.path, "rb"), None
        archive = zipfile.ZipFile(self.path)
        try:
            pwd = self.password.encode() if self.password else None
            return archive.open(self.member, pwd=pwd), archive
        except BaseException:
            archive.close()
            raise

    def read(self, limit: int | None = None) -> bytes:
        """The sample's bytes (at most `limit` of them); raises SampleReadError with a one-line reason."""
        try:
            stream, archive = self._open()
            try:
                with stream:
                    return stream.read() if limit is None else stream.read(limit)
            finally:
                if archive is not None:
                    archive.close()
        except RuntimeError as e:  # zipfile's way of saying the password is missing or wrong
            raise SampleReadError(_password_message(e)) from None
        except (OSError, zipfile.BadZipFile, KeyError, NotImplementedError, EOFError) as e:
            raise SampleReadError(f"cannot read: {getattr(e, 'strerror', None) or e}") from None


@dataclass(frozen=True)
class InputProblem:
    name: str
    message: str
    sha256: str = ""  # when known (a manifest row over the size limit)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hash_stream(stream) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _password_message(e: RuntimeError) -> str:
    msg = str(e)
    return "wrong or missing password (--password)" if "password" in msg.lower() else msg


def too_large(size: int, max_bytes: int | None) -> str | None:
    """The error for an input of `size` bytes over the limit, or None when it is within it."""
    if not max_bytes or size <= max_bytes:
        return None
    return (
        f"{size / MIB:,.1f} MiB, larger than the size limit of {max_bytes / MIB:,.0f} MiB "
        "(--max-file-size); not read"
    )


def _file_sample(path: Path, max_bytes: int | None) -> Sample | InputProblem:
    try:
        size = path.stat().st_size
        problem = too_large(size, max_bytes)
        if problem:
            return InputProblem(str(path), problem)
        with open(path, "rb") as fh:
            digest = _hash_stream(fh)
    except OSError as e:
        return InputProblem(str(path), f"cannot read: {e.strerror or e}")
    return Sample(digest, str(path), str(path), size=size)


def _zip_samples(path: Path, password: str | None, max_bytes: int | None) -> Iterator[Sample | InputProblem]:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        yield InputProblem(str(path), f"unreadable zip archive: {e}")
        return
    with archive:
        pwd = password.encode() if password else None
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = f"{path}:{info.filename}"
            problem = too_large(info.file_size, max_bytes)
            if problem:
                yield InputProblem(name, problem)
                continue
            try:
                with archive.open(info, pwd=pwd) as member:
                    digest = _hash_stream(member)
            except RuntimeError as e:
                yield InputProblem(name, _password_message(e))
                continue
            except (OSError, zipfile.BadZipFile, NotImplementedError, EOFError) as e:
                yield InputProblem(name, f"cannot extract: {e}")
                continue
            yield Sample(digest, name, str(path), info.filename, password, info.file_size)


def walk(paths: list[Path]) -> Iterator[Path | InputProblem]:
    """Files in argument order, directories walked in sorted order; a missing path is a problem."""
    for path in paths:
        if not path.exists():
            yield InputProblem(str(path), "no such file or directory")
        elif path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def iter_samples(
    paths: list[Path], password: str | None = None, max_bytes: int | None = DEFAULT_MAX_FILE_MB * MIB
) -> Iterator[Sample | InputProblem]:
    """Samples in argument order; directories are walked in sorted order; zips are opened.

    Files (and archive members) over `max_bytes` become problems without being read (None: no limit).
    """
    for item in walk(paths):
        if isinstance(item, InputProblem):
            yield item
        else:
            yield from _one(item, password, max_bytes)


def _one(path: Path, password: str | None, max_bytes: int | None) -> Iterator[Sample | InputProblem]:
    if path.suffix.lower() == ".zip" or _looks_like_zip(path):
        yield from _zip_samples(path, password, max_bytes)
    else:
        yield _file_sample(path, max_bytes)


def _looks_like_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"PK\x03\x04" and zipfile.is_zipfile(path)
    except OSError:
        return False
