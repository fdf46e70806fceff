"""PE metadata extraction, on tiny PE images written byte by byte here (no sample is ever used).

`make_pe` is also imported by the other corpus tests: it builds a minimal, valid PE32 / PE32+ image whose
only code is a `ret`, with optional imports, Rich header and marker strings.
"""

from __future__ import annotations

import struct

import pytest

from runtrace.corpus.pemeta import NotPeError, read_pe_meta, shannon_entropy

MACHINES = {"i386": 0x14C, "amd64": 0x8664, "arm64": 0xAA64}
E_LFANEW = 0x100  # leaves 0x80..0x100 for a Rich header, where MSVC's linker (and pefile) put it
FILE_ALIGN = 0x200
SECT_ALIGN = 0x1000


def _rich_header(entries: list[tuple[int, int, int]], key: int = 0x1234ABCD) -> bytes:
    """A Rich header: "DanS" + 3 pads + (comp.id, count) pairs, XOR-masked, then "Rich" + key."""
    words = [0x536E6144, 0, 0, 0]
    for prod, build, count in entries:
        words += [(prod << 16) | build, count]
    masked = b"".join(struct.pack("<I", w ^ key) for w in words)
    return masked + b"Rich" + struct.pack("<I", key)


def _imports(rva: int, pe64: bool, dll: str, names: list[str]) -> bytes:
    """An import directory for one DLL laid out at `rva`: descriptors, ILT, IAT, names."""
    thunk = 8 if pe64 else 4
    n = len(names) + 1
    ilt = rva + 40
    iat = ilt + n * thunk
    dll_name = iat + n * thunk
    hints = dll_name + len(dll) + 1 + (len(dll) + 1) % 2
    hint_rvas, blob = [], b""
    for name in names:
        hint_rvas.append(hints + len(blob))
        entry = b"\0\0" + name.encode() + b"\0"
        blob += entry + (b"\0" if len(entry) % 2 else b"")
    fmt = "<Q" if pe64 else "<I"
    thunks = b"".join(struct.pack(fmt, h) for h in hint_rvas) + struct.pack(fmt, 0)
    out = struct.pack("<IIIII", ilt, 0, 0, dll_name, iat) + bytes(20)
    out += thunks + thunks + dll.encode() + b"\0"
    out += b"\0" * (hints - rva - len(out))
    return out + blob


def make_pe(
    arch: str = "i386",
    dll: bool = False,
    subsystem: int = 3,
    linker: tuple[int, int] = (2, 39),
    imports: tuple[str, list[str]] | None = ("kernel32.dll", ["ExitProcess"]),
    rich: list[tuple[int, int, int]] | None = None,
    extra: bytes = b"",
    timestamp: int = 0x5F5E100,
    repro: bool = False,
) -> bytes:
    """A minimal valid PE image; `extra` is appended to the code section (markers, padding).
    `repro` adds a debug directory with a REPRO entry, as a reproducible build has."""
    pe64 = arch == "amd64"
    machine = MACHINES[arch]
    dos = bytearray(E_LFANEW)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, E_LFANEW)
    if rich:
        header = _rich_header(rich)
        assert 0x80 + len(header) <= E_LFANEW, "Rich header too long for this tiny DOS area"
        dos[0x80 : 0x80 + len(header)] = header

    code = b"\xc3" + extra
    debug_dir = (0, 0)
    if repro:
        code += b"\0" * (-len(code) % 4)
        debug_dir = (0x1000 + len(code), 28)
        code += struct.pack("<IIHHIIII", 0, timestamp, 0, 0, 16, 0, 0, 0)  # IMAGE_DEBUG_TYPE_REPRO
    code_raw = code + b"\0" * (-len(code) % FILE_ALIGN)
    sections = [(b".text", 0x1000, code_raw, 0x60000020)]
    import_dir = (0, 0)
    if imports:
        idata = _imports(
            0x1000 + SECT_ALIGN * ((len(code_raw) + SECT_ALIGN - 1) // SECT_ALIGN), pe64, *imports
        )
        rva = 0x1000 + SECT_ALIGN * ((len(code_raw) + SECT_ALIGN - 1) // SECT_ALIGN)
        sections.append((b".idata", rva, idata + b"\0" * (-len(idata) % FILE_ALIGN), 0xC0000040))
        import_dir = (rva, len(idata))

    opt_size = 0xF0 if pe64 else 0xE0
    headers_size = E_LFANEW + 4 + 20 + opt_size + 40 * len(sections)
    headers_raw = headers_size + (-headers_size % FILE_ALIGN)
    last_rva, last_raw = sections[-1][1], sections[-1][2]
    image_size = last_rva + SECT_ALIGN * ((len(last_raw) + SECT_ALIGN - 1) // SECT_ALIGN)

    characteristics = 0x0102 | (0x2000 if dll else 0) | (0 if pe64 else 0x0100)
    file_header = struct.pack("<HHIIIHH", machine, len(sections), timestamp, 0, 0, opt_size, characteristics)
    std = struct.pack("<HBBIIII", 0x20B if pe64 else 0x10B, linker[0], linker[1], len(code_raw), 0, 0, 0x1000)
    std += struct.pack("<I", 0x1000)  # BaseOfCode
    # PE32+ has no BaseOfData and a 64-bit ImageBase.
    windows = struct.pack("<Q", 0x140000000) if pe64 else struct.pack("<II", 0, 0x400000)
    windows += struct.pack(
        "<IIHHHHHHIIII", SECT_ALIGN, FILE_ALIGN, 6, 0, 0, 0, 6, 0, 0, image_size, headers_raw, 0
    )
    windows += struct.pack("<HH", subsystem, 0x8140)
    stack = (
        struct.pack("<QQQQ", 0x100000, 0x1000, 0x100000, 0x1000)
        if pe64
        else struct.pack("<IIII", 0x100000, 0x1000, 0x100000, 0x1000)
    )
    windows += stack + struct.pack("<II", 0, 16)
    dirs = [(0, 0)] * 16
    dirs[1] = import_dir
    dirs[6] = debug_dir
    data_dirs = b"".join(struct.pack("<II", *d) for d in dirs)
    optional = std + windows + data_dirs
    assert len(optional) == opt_size

    table, body, raw_ptr = b"", b"", headers_raw
    for name, rva, raw, flags in sections:
        table += struct.pack("<8sIIIIIIHHI", name, len(raw), rva, len(raw), raw_ptr, 0, 0, 0, 0, flags)
        body += raw
        raw_ptr += len(raw)
    head = bytes(dos) + b"PE\0\0" + file_header + optional + table
    return head + b"\0" * (headers_raw - len(head)) + body


def test_i386_exe_with_imports_is_described():
    meta = read_pe_meta(make_pe("i386"), "tool.exe")
    assert (meta.arch, meta.kind) == ("i386", "exe")
    assert (meta.linker_major, meta.linker_minor) == (2, 39)
    assert meta.section_count == 2
    assert (meta.import_dll_count, meta.import_count) == (1, 1)
    assert meta.compiler == "mingw-gcc"  # GNU ld writes 2.x and no Rich header
    assert not meta.has_rich and not meta.is_dotnet and not meta.signed
    assert meta.size == len(make_pe("i386"))
    assert 0 < meta.entropy < 8


def test_reproducible_builds_are_flagged():
    assert read_pe_meta(make_pe("i386", timestamp=0x12345678, repro=True)).repro_build
    meta = read_pe_meta(make_pe("i386", timestamp=0x12345678))
    assert not meta.repro_build and meta.timestamp == 0x12345678


def test_amd64_dll_with_rich_header_is_msvc():
    data = make_pe("amd64", dll=True, linker=(14, 29), rich=[(0x0104, 30133, 5), (0x0105, 30133, 12)])
    meta = read_pe_meta(data, "mod.pyd")
    assert (meta.arch, meta.kind) == ("amd64", "dll")
    assert meta.has_rich and meta.rich_entries == 2 and meta.rich_max_build == 30133
    assert meta.compiler == "msvc" and "14.29" in meta.compiler_detail
    assert meta.linker_version == pytest.approx(14.29)


def test_native_image_importing_the_kernel_is_a_driver():
    data = make_pe("amd64", subsystem=1, imports=("ntoskrnl.exe", ["IoCreateDevice", "IoDeleteDevice"]))
    meta = read_pe_meta(data, "thing.bin")
    assert meta.kind == "driver" and meta.import_count == 2


def test_toolchain_markers():
    assert read_pe_meta(make_pe(extra=b"\xff Go buildinf:xyz", linker=(3, 0))).compiler == "go"
    rust = make_pe(extra=b"/rustc/abc/library/core", rich=[(0x0104, 30133, 1)], linker=(14, 36))
    assert read_pe_meta(rust).compiler == "rust"
    assert read_pe_meta(make_pe(linker=(14, 0))).compiler == "llvm-lld"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too small"),
        (b"\x7fELF" + bytes(100), "no MZ header"),
        (b"MZ" + bytes(0x3A) + struct.pack("<I", 0x40) + b"NE" + bytes(64), "16-bit NE"),
        (b"MZ" + bytes(0x3A) + struct.pack("<I", 0x40) + b"XX" + bytes(64), "without a PE header"),
    ],
)
def test_non_pe_input_gets_a_short_reason(data, reason):
    with pytest.raises(NotPeError, match=reason):
        read_pe_meta(data)


def test_arm64_is_refused_as_unsupported():
    with pytest.raises(NotPeError, match="arm64"):
        read_pe_meta(make_pe("arm64"))


def test_truncated_pe_is_refused_not_crashing():
    data = make_pe("i386")
    with pytest.raises(NotPeError):
        read_pe_meta(data[: E_LFANEW + 30])


def test_entropy_bounds():
    assert shannon_entropy(b"") == 0.0
    assert shannon_entropy(b"\0" * 100) == 0.0
    assert shannon_entropy(bytes(range(256))) == pytest.approx(8.0)
