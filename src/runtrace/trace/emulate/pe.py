"""Checking that a file is a PE the tracer can emulate, with one-line reasons when it is not.

The checks run before the emulator sees the file, so every kind of bad input gets a clear message
instead of an emulator traceback: empty files, other formats, DOS-only MZ, truncated or absurd headers,
foreign machines, .NET assemblies and kernel drivers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pefile

from runtrace.trace.model import Arch

# The PE constants runtrace checks, named once (pefile's tables give the values); the corpus's metadata
# reader uses the same ones.
MZ = b"MZ"
MACHINE_I386 = pefile.MACHINE_TYPE["IMAGE_FILE_MACHINE_I386"]
MACHINE_AMD64 = pefile.MACHINE_TYPE["IMAGE_FILE_MACHINE_AMD64"]
IMAGE_FILE_DLL = pefile.IMAGE_CHARACTERISTICS["IMAGE_FILE_DLL"]
SUBSYSTEM_NATIVE = pefile.SUBSYSTEM_TYPE["IMAGE_SUBSYSTEM_NATIVE"]


def is_pe_file(path) -> bool:
    """Whether the file starts like a PE (MZ); OSError when it cannot be read."""
    with open(path, "rb") as fh:
        return fh.read(2) == MZ


_MACHINES = {MACHINE_I386: Arch.X86, MACHINE_AMD64: Arch.AMD64}
_MACHINE_NAMES = {
    0xAA64: "ARM64",
    0x1C0: "ARM",
    0x1C4: "ARMv7 Thumb-2",
    0x200: "IA-64",
    0xEBC: "EFI byte code",
}
_MAGICS = {
    b"\x7fELF": "an ELF file",
    b"\xcf\xfa\xed\xfe": "a Mach-O file",
    b"\xfe\xed\xfa\xcf": "a Mach-O file",
    b"PK\x03\x04": "a zip archive",
    b"%PDF": "a PDF document",
    b"\xca\xfe\xba\xbe": "a Mach-O universal or Java class file",
}
_MAX_SECTIONS = 96  # the loader's limit on NT


class UnsupportedInput(ValueError):
    """The file cannot be traced; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class PeInfo:
    arch: Arch
    is_dll: bool
    image_base: int
    entry_rva: int
    export_count: int

    @property
    def kind(self) -> str:
        return "dll" if self.is_dll else "exe"


def _describe_non_pe(data: bytes) -> str:
    for magic, what in _MAGICS.items():
        if data.startswith(magic):
            return f"not a PE file ({what})"
    head = data[:64]
    if head and all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        return "not a PE file (text)"
    return "not a PE file (no MZ header)"


def inspect_pe(data: bytes) -> PeInfo:
    """Validate the headers and describe the file; raises UnsupportedInput with a one-line reason."""
    if not data:
        raise UnsupportedInput("empty file")
    if not data.startswith(MZ):
        raise UnsupportedInput(_describe_non_pe(data))
    if len(data) < 0x40:
        raise UnsupportedInput(f"truncated DOS header ({len(data)} bytes)")
    (e_lfanew,) = struct.unpack_from("<I", data, 0x3C)
    if e_lfanew == 0 or e_lfanew + 4 > len(data):
        raise UnsupportedInput("DOS-only MZ executable (no PE header)")
    if data[e_lfanew : e_lfanew + 4] != b"PE\0\0":
        raise UnsupportedInput("DOS-only MZ executable (no PE signature where e_lfanew points)")
    if e_lfanew + 24 > len(data):
        raise UnsupportedInput("truncated PE file header")
    machine, n_sections = struct.unpack_from("<HH", data, e_lfanew + 4)
    (opt_size,) = struct.unpack_from("<H", data, e_lfanew + 20)
    if machine not in _MACHINES:
        name = _MACHINE_NAMES.get(machine, f"machine 0x{machine:04x}")
        raise UnsupportedInput(f"unsupported: PE for {name} (only i386 and amd64 are emulated)")
    if n_sections == 0 or n_sections > _MAX_SECTIONS:
        raise UnsupportedInput(f"absurd header value: {n_sections} sections")
    if opt_size < 0x60 or e_lfanew + 24 + opt_size > len(data):
        raise UnsupportedInput(f"truncated or absurd optional header (size {opt_size})")
    try:
        pe = pefile.PE(data=data, fast_load=True)
    except pefile.PEFormatError as e:
        raise UnsupportedInput(f"malformed PE: {e}") from None
    # Parsed from bytes, so there is nothing to release: no `pe.close()`, which would also run a full
    # garbage collection (see imageload).
    opt = pe.OPTIONAL_HEADER
    if opt.SizeOfImage == 0 or opt.SizeOfImage > 0x7FFF0000:
        raise UnsupportedInput(f"absurd header value: SizeOfImage 0x{opt.SizeOfImage:x}")
    if opt.SectionAlignment == 0 or opt.SectionAlignment & (opt.SectionAlignment - 1):
        raise UnsupportedInput(f"absurd header value: SectionAlignment 0x{opt.SectionAlignment:x}")
    dirs = opt.DATA_DIRECTORY
    com = dirs[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_COM_DESCRIPTOR"]] if len(dirs) > 14 else None
    if com is not None and com.VirtualAddress and com.Size:
        raise UnsupportedInput("unsupported: .NET assembly (managed code is not emulated)")
    if opt.Subsystem == SUBSYSTEM_NATIVE:
        raise UnsupportedInput("unsupported: kernel driver or native-subsystem image")
    is_dll = bool(pe.FILE_HEADER.Characteristics & IMAGE_FILE_DLL)
    export_count = 0
    exp = dirs[0] if dirs else None
    if exp is not None and exp.VirtualAddress and exp.Size:
        pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXPORT"]])
        export_count = len(getattr(getattr(pe, "DIRECTORY_ENTRY_EXPORT", None), "symbols", []) or [])
    if not is_dll and opt.AddressOfEntryPoint == 0:
        raise UnsupportedInput("EXE without an entry point")
    return PeInfo(_MACHINES[machine], is_dll, opt.ImageBase, opt.AddressOfEntryPoint, export_count)
