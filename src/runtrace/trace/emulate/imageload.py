"""Loading large images: Speakeasy's PE class parses data directories the emulation never reads.

Speakeasy's `PeFile` loads with pefile's full parse, which turns every base relocation and every
amd64 unwind entry into Python objects: for a 50 MB program (cmake, uv, pandoc) hundreds of
thousands of them, about a minute and several hundred MB before the first instruction, and past the
tracer's memory cap for the largest.  The emulation reads imports, exports, TLS, resources and the
delay-load table; relocations only when an image must be moved, which is then parsed on demand.

Two more costs grow with the image: Speakeasy patches the import address table by copying the whole
mapped image once per import (for a 50 MB program with a few thousand imports, most of a minute), and
pefile's full parse first counts every byte value of the file in a Python `Counter` (seconds), only to
warn about files that look truncated.  Speakeasy's PE class skips that census (pefile's fast parse, then
the rest of the full parse); the import patching gives the same image at a fraction of the cost.

And pefile runs a full garbage collection whenever a PE object closes or copies its data, to release an
mmap: 30-60 ms each in a process holding numpy and the emulator, a tenth of a short program's whole
trace.  Speakeasy's `PeFile` (which its decoy modules extend) only closes an mmap; `pefile.PE` itself,
used by everything else, keeps its behaviour.
"""

from __future__ import annotations  # noqa: I001  (speakeasy_loader must come before speakeasy)

import mmap
import pefile

from runtrace.trace.emulate import speakeasy_loader  # noqa: F401  (first: lean imports of unicorn and speakeasy)
from speakeasy.windows.common import PeFile
from runtrace.trace.emulate import wsock32

_SKIPPED = frozenset(
    pefile.DIRECTORY_ENTRY[name]
    for name in (
        "IMAGE_DIRECTORY_ENTRY_BASERELOC",  # parsed when the image is relocated
        "IMAGE_DIRECTORY_ENTRY_EXCEPTION",  # amd64 unwind data: Speakeasy has no table-based SEH
        "IMAGE_DIRECTORY_ENTRY_DEBUG",
        "IMAGE_DIRECTORY_ENTRY_SECURITY",
    )
)
_BASERELOC = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_BASERELOC"]


speakeasy_patch_imports = PeFile._patch_imports  # Speakeasy's own (the tests compare against it)


def install() -> None:
    """Patch Speakeasy's PeFile (idempotent)."""
    if getattr(PeFile, "runtrace_lean", False):
        return
    parse, relocate = PeFile.parse_data_directories, PeFile.relocate_image
    parse_pe = PeFile.__parse__  # pefile.PE.__parse__ (a dunder name: not mangled)

    def parse_without_byte_census(self, fname, data, fast_load):
        # Everything of the full parse but the byte census: the fast parse, then what it leaves out.
        parse_pe(self, fname, data, True)
        if not fast_load:
            self.full_load()

    def parse_data_directories(
        self, directories=None, forwarded_exports_only=False, import_dllnames_only=False
    ):
        if directories is None:
            directories = [i for i in range(len(self.OPTIONAL_HEADER.DATA_DIRECTORY)) if i not in _SKIPPED]
        return parse(self, directories, forwarded_exports_only, import_dllnames_only)

    def relocate_image(self, new_image_base):
        if not hasattr(self, "DIRECTORY_ENTRY_BASERELOC"):
            parse(self, [_BASERELOC])
        return relocate(self, new_image_base)

    PeFile.parse_data_directories = parse_data_directories
    PeFile.relocate_image = relocate_image
    PeFile._patch_imports = _patch_imports
    PeFile._close_data = _close_without_full_gc
    PeFile.__parse__ = parse_without_byte_census
    PeFile.runtrace_lean = True


def _close_without_full_gc(self) -> None:
    data = getattr(self, "__data__", None)
    if isinstance(data, mmap.mmap):
        data.close()
        del self.__data__


def _patch_imports(self) -> None:
    """Speakeasy's `PeFile._patch_imports`, writing into one copy of the image: every import address
    slot gets a distinct invalid address, whose fetch the emulator answers as that API."""
    if not self.imports:
        return
    if not self.mapped_image:
        raise ValueError("PE image has not been mapped yet")
    image = bytearray(self.mapped_image)
    self.mapped_image = None  # two copies of the image at a time, not three
    for addr, imp in self.imports.items():
        offset = addr - self.base
        image[offset : offset + self.ptr_size] = self.imp_id.to_bytes(self.ptr_size, "little")
        # WSOCK32's ordinals differ from the WS2_32 ones Speakeasy resolves them by (`wsock32.py`).
        self.import_table[self.imp_id] = (imp[0], wsock32.import_name(*imp))
        self.imp_id += self.imp_step
    self.mapped_image = bytes(image)
