"""Turning one uploaded file into the samples to scan, refusing what would hurt the service.

A zip archive of samples (malware is exchanged as zips with the password `infected`) becomes one sample
per member; a runtrace trace, which is itself a zip, stays one file.  Archives are checked against zip
bombs before anything is inflated - member count, each member's declared size and compression ratio,
the archive's declared total - and again while inflating, since a crafted header can lie about sizes.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from runtrace.trace.formats.native import TRACE_MEMBERS

MAX_MEMBERS = 1000
# A PE file rarely compresses better than 20:1 (long runs of zero padding are the best case); a bomb
# compresses 1000:1 and more.
MAX_RATIO = 200
_CHUNK = 1 << 20


class UploadRejected(ValueError):
    """An upload the service refuses; the message says why in one line."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class UploadedFile:
    name: str
    data: bytes


def unpack_upload(name: str, data: bytes, password: str | None, max_bytes: int) -> list[UploadedFile]:
    """The files to scan from one upload; raises UploadRejected for empty uploads, broken or hostile
    archives and wrong passwords.  `max_bytes` bounds each member and the archive's total."""
    if not data:
        raise UploadRejected(f"{name}: empty upload")
    if data[:4] != b"PK\x03\x04":
        return [UploadedFile(name, data)]
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise UploadRejected(f"{name}: unreadable zip archive: {e}") from None
    with archive:
        members = [i for i in archive.infolist() if not i.is_dir()]
        if {i.filename for i in members} >= TRACE_MEMBERS:
            return [UploadedFile(name, data)]  # a runtrace trace: scanned as one file
        _check_bomb(name, members, max_bytes)
        if password:
            archive.setpassword(password.encode())
        files = [UploadedFile(f"{name}:{i.filename}", _inflate(name, archive, i, max_bytes)) for i in members]
    if not files:
        raise UploadRejected(f"{name}: the zip archive holds no files")
    return files


def _check_bomb(name: str, members: list[zipfile.ZipInfo], max_bytes: int) -> None:
    if len(members) > MAX_MEMBERS:
        raise UploadRejected(f"{name}: {len(members)} files in the archive, more than {MAX_MEMBERS}", 413)
    total = 0
    for info in members:
        if info.file_size > max_bytes:
            raise UploadRejected(
                f"{name}:{info.filename}: {info.file_size} bytes unpacked, over the limit of {max_bytes}",
                413,
            )
        if info.file_size > MAX_RATIO * max(info.compress_size, 1) and info.file_size > _CHUNK:
            raise UploadRejected(
                f"{name}:{info.filename}: compression ratio above {MAX_RATIO}:1 (a zip bomb?)", 413
            )
        total += info.file_size
    if total > max_bytes:
        raise UploadRejected(f"{name}: {total} bytes unpacked, over the limit of {max_bytes}", 413)


def _inflate(name: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> bytes:
    """The member's bytes, read in chunks and stopped past its declared size (headers can lie)."""
    out = bytearray()
    try:
        with archive.open(info) as fh:
            while chunk := fh.read(_CHUNK):
                out += chunk
                if len(out) > min(info.file_size, max_bytes):
                    raise UploadRejected(f"{name}:{info.filename}: more bytes than the archive declares", 413)
    except RuntimeError as e:  # zipfile's way of saying the password is missing or wrong
        if "password" in str(e).lower():
            raise UploadRejected(f"{name}:{info.filename}: wrong or missing password") from None
        raise UploadRejected(f"{name}:{info.filename}: cannot extract: {e}") from None
    except (zipfile.BadZipFile, NotImplementedError, EOFError, OSError) as e:
        raise UploadRejected(f"{name}:{info.filename}: cannot extract: {e}") from None
    return bytes(out)
