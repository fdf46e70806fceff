"""A cache of Speakeasy's decoy DLL images, in memory and on disk.

For every system DLL a program may look at, Speakeasy builds a small PE image holding an export table of
the APIs it emulates (`generate_export_table`), with pefile, at every start: about 0.3 s of a 0.5 s
emulation of a short program, every time.  The image depends only on the Speakeasy release, the
architecture and the DLL name, so it is built once and kept: in memory for the life of the process
(forked batch children inherit it) and as a file under the user cache dir, so a one-file `runtrace
scan` process does not pay for it either.

Parsing the image into a module object (pefile) costs as much again: 37 modules, about 8 ms of every
emulation.  So each module is parsed once per process too, and every emulation gets a shallow copy of
that parsed template (`_Templates`).  Until a decoy is mapped, Speakeasy and the tracer only read it and
rebind per-run attributes on the copy (its base, path and name); the in-place changes (`full_load`,
relocation to the mapped base) all happen in `map_decoy`, which first re-parses the copy in place, so a
mapped decoy shares nothing with the template or with other emulations.  Most programs map none.
"""

from __future__ import annotations

import copy
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


# Bumped when runtrace changes what goes into an image (2: the export directory names the DLL's file).
_LAYOUT = 2


def cache_dir() -> Path:
    return cache_root() / "decoys" / f"{_speakeasy_release()}-{_LAYOUT}"


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


class _Templates:
    """Parsed decoy modules, one per (architecture, DLL) for the life of the process; `copy` hands out a
    shallow copy whose top-level containers are its own."""

    _OWN = ("imports", "exports", "import_table", "pe_sections")  # Speakeasy's PeFile fills these lists

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, ...], se_common.DecoyModule] = {}

    def copy(self, key: tuple[str, ...], **init) -> se_common.DecoyModule:
        template = self._parsed.get(key)
        if template is None:
            template = self._parsed[key] = se_common.DecoyModule(**init)
        module = copy.copy(template)
        for name in self._OWN:
            value = getattr(template, name, None)
            if value is not None:
                setattr(module, name, copy.copy(value))
        module.runtrace_template = (template, init)
        return module

    @staticmethod
    def make_private(module) -> None:
        """Re-parse a copy in place (pefile objects then point back at it, not at the template), keeping
        what this emulation rebound on it since: from then on the module shares nothing."""
        template, init = module.__dict__.pop("runtrace_template")
        shared = template.__dict__
        rebound = {k: v for k, v in module.__dict__.items() if shared.get(k, _Templates) is not v}
        module.__dict__.clear()
        se_common.DecoyModule.__init__(module, **init)
        module.__dict__.update(rebound)


_templates = _Templates()


def install() -> None:
    """Route Speakeasy's decoy image builder through the caches (idempotent)."""
    build = winemu.WindowsEmulator.generate_export_table
    if getattr(build, "runtrace_cached", False):
        return
    map_decoy = winemu.WindowsEmulator.map_decoy

    def generate_export_table(self, modname):
        if not modname:
            return None
        arch, name = str(self.get_arch()), modname.lower()
        image = _decoy_image(self, name, build)
        if image:
            return _templates.copy(("jit", arch, name), data=image, is_jitted=True)
        # Speakeasy's `init_module`, the only caller, then loads its `default_exe` image from the file
        # in its package for this DLL: the same module, from the same template.
        path = self.get_native_module_path(mod_name="default_exe")
        return _templates.copy(("file", path), path=path) if path else None

    def map_decoy_privately(self, decoy):
        if "runtrace_template" in decoy.__dict__:
            _Templates.make_private(decoy)
        return map_decoy(self, decoy)

    generate_export_table.runtrace_cached = True
    se_common.JitPeFile.get_decoy_pe_image = _named_like_the_file(se_common.JitPeFile.get_decoy_pe_image)
    winemu.WindowsEmulator.generate_export_table = generate_export_table
    winemu.WindowsEmulator.map_decoy = map_decoy_privately


def _named_like_the_file(get_decoy_pe_image):
    """Speakeasy names a decoy's export directory after the module without its extension ("kernel32");
    Windows' DLLs carry their file name there ("KERNEL32.dll"), and code that finds its APIs by walking
    the loaded modules' export directories may compare that name with "kernel32.dll" (over the corpus
    this changed few runs: `docs/tracer.md`, revision 20)."""

    def named(self, mod_name, exports):
        if "." not in mod_name:
            mod_name += ".exe" if mod_name == "ntoskrnl" else ".dll"
        return get_decoy_pe_image(self, mod_name, exports)

    return named
