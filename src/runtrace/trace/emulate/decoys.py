"""A cache of Speakeasy's decoy DLL images, in memory and on disk.

For every system DLL a program may look at, Speakeasy builds a small PE image holding an export table of
the APIs it emulates (`generate_export_table`), with pefile, at every start: about 0.3 s of a 0.5 s
emulation of a short program, every time.  The image depends only on the Speakeasy release, the
architecture and the DLL name, so it is built once and kept: in memory for the life of the process
(forked batch children inherit it) and as a file under the user cache dir, so a one-file `runtrace
scan` process does not pay for it either.  The module object is still made afresh from the image bytes
for every emulation, as Speakeasy then sets per-run fields on it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

from speakeasy.windows import common as se_common
from speakeasy.windows import winemu

from runtrace.paths import cache_root

_DIST = "speakeasy_emulator"  # the distribution's name as wheel folders spell it
_MISSING = b""  # Speakeasy has no handler module for this DLL: no decoy image
_images: dict[tuple[str, str], bytes] = {}


@functools.cache
def _speakeasy_release() -> str:
    """The installed Speakeasy's release: from the name of the wheel's metadata folder beside the package
    (`speakeasy_emulator-1.5.11.dist-info`), else from importlib.metadata, which searches every path entry
    and parses the METADATA file (about 3 ms in every tracer process, and importing it about 8 ms more
    where nothing else has)."""
    site = Path(se_common.__file__).resolve().parents[2]
    folders = list(site.glob(f"{_DIST}-*.dist-info"))
    if len(folders) == 1:
        return folders[0].name[len(_DIST) + 1 : -len(".dist-info")]
    from importlib import metadata

    try:
        return metadata.version("speakeasy-emulator")
    except metadata.PackageNotFoundError:
        return "unknown"


def cache_dir() -> Path:
    return cache_root() / "decoys" / _speakeasy_release()


def _file_for(arch: str, name: str) -> Path:
    # DLL names come from the program's import table: hash them rather than trust them as file names.
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return cache_dir() / arch / f"{digest}.img"


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _write(path: Path, image: bytes) -> None:
    # Best effort: a read-only or full cache dir only costs speed.  Written under a temporary name and
    # renamed, so concurrent tracer processes never see half a file.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(image)
        os.replace(tmp, path)
    except OSError:
        pass


def _decoy_image(emulator, name: str, build) -> bytes:
    arch = str(emulator.get_arch())
    key = (arch, name)
    image = _images.get(key)
    if image is None:
        path = _file_for(arch, name)
        image = _read(path)
        if image is None:
            module = build(emulator, name)
            image = bytes(module.__data__) if module is not None else _MISSING
            _write(path, image)
        _images[key] = image
    return image


def install() -> None:
    """Route Speakeasy's decoy image builder through the cache (idempotent)."""
    build = winemu.WindowsEmulator.generate_export_table
    if getattr(build, "runtrace_cached", False):
        return

    def generate_export_table(self, modname):
        if not modname:
            return None
        image = _decoy_image(self, modname.lower(), build)
        return se_common.DecoyModule(data=image, is_jitted=True) if image else None

    generate_export_table.runtrace_cached = True
    winemu.WindowsEmulator.generate_export_table = generate_export_table
