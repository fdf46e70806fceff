"""Static PE metadata for the manifest: what a file *is* (packaging), never what it *does*.

Every field here is a potential shortcut for a classifier, which is exactly why the corpus records them:
the shortcut audit trains on these columns alone to show how much of the class signal lives in packaging.
The same function describes malicious and benign files, so no field can differ between the classes
merely because it was computed differently.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import numpy as np
import pefile

from runtrace.trace.emulate.pe import IMAGE_FILE_DLL, MACHINE_AMD64, MACHINE_I386, MZ, SUBSYSTEM_NATIVE

MACHINE_ARCH = {MACHINE_I386: "i386", MACHINE_AMD64: "amd64"}
OTHER_MACHINES = {0x1C0: "arm", 0x1C4: "armnt", 0xAA64: "arm64", 0x200: "ia64", 0xEBC: "efi-bytecode"}

KERNEL_IMPORTS = {"ntoskrnl.exe", "hal.dll", "ndis.sys", "wdfldr.sys", "fltmgr.sys", "ks.sys"}

# Byte markers of toolchains that leave no Rich header.  Checked on the raw file because section layout
# differs between linkers, while these strings survive in every build the toolchain makes.
GO_MARKERS = (b"\xff Go buildinf:", b"Go build ID: ", b"runtime.gopanic")
RUST_MARKERS = (b"/rustc/", b"RUST_BACKTRACE", b"rust_panic")
GCC_MARKERS = (b"GCC: (GNU)", b"Mingw-w64 runtime failure", b"__mingw_", b"libgcc_s_dw2")
WINE_MARKER = b"Wine builtin DLL"
DELPHI_SECTIONS = {"CODE", "DATA", "BSS", ".itext"}


class NotPeError(ValueError):
    """The bytes are not a PE image runtrace can use; the message says why, in a few words."""


@dataclass(frozen=True, slots=True)
class PeMeta:
    arch: str  # "i386" / "amd64"
    kind: str  # "exe" / "dll" / "driver"
    size: int
    is_dotnet: bool
    linker_major: int
    linker_minor: int
    has_rich: bool
    rich_entries: int  # distinct (product id, build) pairs in the Rich header
    rich_max_build: int  # the newest tool build number listed there, 0 without a Rich header
    compiler: str  # family: msvc, rust, go, mingw-gcc, llvm-lld, delphi, dotnet, unknown
    compiler_detail: str  # e.g. "msvc link 14.29", "GNU ld 2.40, wine builtin"
    section_count: int
    import_dll_count: int
    import_count: int
    export_count: int
    entropy: float  # Shannon entropy of the whole file, bits per byte
    signed: bool  # carries an Authenticode blob (not verified: only presence is a packaging trait)
    subsystem: int
    timestamp: int
    repro_build: bool  # a REPRO debug entry: `timestamp` is a content hash, not the link time
    packer_hint: str  # "upx" etc. from section names, "" when none is recognised

    @property
    def linker_version(self) -> float:
        return self.linker_major + self.linker_minor / 100.0

    def as_dict(self) -> dict:
        return asdict(self)


def shannon_entropy(data: bytes) -> float:
    if not data:
        return 0.0
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256).astype(np.float64)
    p = counts[counts > 0] / len(data)
    return float(-(p * np.log2(p)).sum())


def _sniff(data: bytes) -> None:
    """Reject non-PE input cheaply and with a precise reason before pefile sees it."""
    if len(data) < 0x40:
        raise NotPeError(f"too small for a PE file ({len(data)} bytes)")
    if data[:2] != MZ:
        raise NotPeError("no MZ header")
    e_lfanew = int.from_bytes(data[0x3C:0x40], "little")
    sig = data[e_lfanew : e_lfanew + 4] if e_lfanew + 4 <= len(data) else b""
    if sig[:2] == b"NE":
        raise NotPeError("16-bit NE executable, not PE")
    if sig[:2] in (b"LE", b"LX"):
        raise NotPeError("VxD / LE executable, not PE")
    if sig != b"PE\0\0":
        raise NotPeError("MZ stub without a PE header")


def _section_names(pe: pefile.PE) -> list[str]:
    return [s.Name.rstrip(b"\0").decode("latin-1") for s in pe.sections]


def _kind(pe: pefile.PE, imported_dlls: set[str], file_name: str) -> str:
    subsystem = pe.OPTIONAL_HEADER.Subsystem
    name = file_name.lower().rstrip("_")
    # Drivers are native-subsystem images linked against the kernel; the name only breaks ties for
    # drivers that import nothing recognisable.
    if subsystem == SUBSYSTEM_NATIVE and (imported_dlls & KERNEL_IMPORTS or name.endswith(".sys")):
        return "driver"
    if pe.FILE_HEADER.Characteristics & IMAGE_FILE_DLL:
        return "dll"
    return "exe"


def _compiler(
    data: bytes, pe: pefile.PE, has_rich: bool, is_dotnet: bool, sections: list[str]
) -> tuple[str, str]:
    major, minor = pe.OPTIONAL_HEADER.MajorLinkerVersion, pe.OPTIONAL_HEADER.MinorLinkerVersion
    linker = f"{major}.{minor:02d}"
    wine = ", wine builtin" if WINE_MARKER in data[:0x200] else ""
    if is_dotnet:
        return "dotnet", f"CLR image, linker {linker}"
    if any(m in data for m in GO_MARKERS):
        return "go", f"Go linker {linker}"
    if any(m in data for m in RUST_MARKERS):
        return "rust", f"rustc, {'msvc link' if has_rich else 'linker'} {linker}"
    if has_rich:
        return "msvc", f"msvc link {linker}"
    if DELPHI_SECTIONS & set(sections) and major == 2 and minor == 25:
        return "delphi", f"Borland linker {linker}"
    mingw_crt = any(m in data for m in GCC_MARKERS)
    if major == 14:
        # An MSVC-style version without a Rich header is LLVM's lld-link (MSVC's link.exe writes one);
        # Zig, GHC and clang toolchains link this way, often against the MinGW C runtime.
        return "llvm-lld", f"lld-link {linker}{', MinGW CRT' if mingw_crt else ''}{wine}"
    if mingw_crt or major == 2:
        return "mingw-gcc", f"GNU ld {linker}{wine}"
    return "unknown", f"linker {linker}{wine}"


def _packer_hint(sections: list[str]) -> str:
    upper = {s.upper() for s in sections}
    if {"UPX0", "UPX1"} & upper:
        return "upx"
    if ".ASPACK" in upper or ".ADATA" in upper:
        return "aspack"
    if any(s.startswith(".MPRESS") for s in upper):
        return "mpress"
    if ".PETITE" in upper:
        return "petite"
    if any(s in upper for s in (".THEMIDA", ".WINLICE")):
        return "themida"
    if any(s.startswith(".VMP") for s in upper):
        return "vmprotect"
    return ""


def _rich_summary(pe: pefile.PE) -> tuple[bool, int, int]:
    # fast_load skips the Rich header, so it is parsed here on its own (full_load would also walk
    # resources and relocations, which is slow on large files and fragile on hostile ones).
    try:
        rich = pe.parse_rich_header()
    except Exception:  # noqa: BLE001 - a damaged Rich header counts as none
        rich = None
    if not rich or not rich.get("values"):
        return False, 0, 0
    compids = rich["values"][0::2]
    builds = [c & 0xFFFF for c in compids]
    return True, len(set(compids)), max(builds, default=0)


IMAGE_DEBUG_TYPE_REPRO = 16


def _repro_build(pe: pefile.PE) -> bool:
    entries = getattr(pe, "DIRECTORY_ENTRY_DEBUG", None) or []
    return any(getattr(e.struct, "Type", None) == IMAGE_DEBUG_TYPE_REPRO for e in entries)


def read_pe_meta(data: bytes, file_name: str = "") -> PeMeta:
    """Describe one PE image; raises `NotPeError` for anything runtrace should not keep."""
    _sniff(data)
    try:
        pe = pefile.PE(data=data, fast_load=True)
    except pefile.PEFormatError as e:
        raise NotPeError(f"malformed PE: {e}") from None
    try:
        machine = pe.FILE_HEADER.Machine
        arch = MACHINE_ARCH.get(machine)
        if arch is None:
            other = OTHER_MACHINES.get(machine, f"machine 0x{machine:04x}")
            raise NotPeError(f"unsupported architecture {other} (the tracer emulates i386/amd64)")
        # Broken import tables are common in malware: count whatever parsed.
        with contextlib.suppress(Exception):
            pe.parse_data_directories(
                directories=[
                    pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"],
                    pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXPORT"],
                    pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_DEBUG"],
                ]
            )
        imports = getattr(pe, "DIRECTORY_ENTRY_IMPORT", [])
        imported_dlls = {(e.dll or b"").decode("latin-1").lower() for e in imports}
        import_count = sum(len(e.imports) for e in imports)
        exports = getattr(pe, "DIRECTORY_ENTRY_EXPORT", None)
        export_count = len(exports.symbols) if exports is not None else 0

        dirs = pe.OPTIONAL_HEADER.DATA_DIRECTORY
        security = dirs[4] if len(dirs) > 4 else None
        clr = dirs[14] if len(dirs) > 14 else None
        is_dotnet = bool(clr is not None and clr.VirtualAddress and clr.Size)
        signed = bool(security is not None and security.VirtualAddress and security.Size)

        sections = _section_names(pe)
        has_rich, rich_entries, rich_max_build = _rich_summary(pe)
        compiler, compiler_detail = _compiler(data, pe, has_rich, is_dotnet, sections)
        return PeMeta(
            arch=arch,
            kind=_kind(pe, imported_dlls, file_name),
            size=len(data),
            is_dotnet=is_dotnet,
            linker_major=int(pe.OPTIONAL_HEADER.MajorLinkerVersion),
            linker_minor=int(pe.OPTIONAL_HEADER.MinorLinkerVersion),
            has_rich=has_rich,
            rich_entries=rich_entries,
            rich_max_build=rich_max_build,
            compiler=compiler,
            compiler_detail=compiler_detail,
            section_count=len(pe.sections),
            import_dll_count=len(imported_dlls),
            import_count=import_count,
            export_count=export_count,
            entropy=round(shannon_entropy(data), 4),
            signed=signed,
            subsystem=int(pe.OPTIONAL_HEADER.Subsystem),
            timestamp=int(pe.FILE_HEADER.TimeDateStamp),
            repro_build=_repro_build(pe),
            packer_hint=_packer_hint(sections),
        )
    except NotPeError:
        raise
    except Exception as e:  # noqa: BLE001 - pefile raises many types on hostile input; one line is enough
        raise NotPeError(f"unreadable PE ({type(e).__name__}: {e})") from None
    finally:
        pe.close()
