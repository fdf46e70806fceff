"""Small runnable PE programs for the emulator's tests and benchmarks, written byte by byte.

`program` lays out a PE32 or PE32+ image with a code section at a fixed address, an import table and,
for amd64, optional unwind data (`.pdata` / `.xdata`); the code is given as a function of the layout,
so it can call imports through their IAT slots and name its own addresses.  The machine code in the
tests is assembled by hand, each instruction with a comment (capstone checks what matters).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

FILE_ALIGN = 0x200
SECT_ALIGN = 0x1000
E_LFANEW = 0x80
TEXT_RVA = 0x1000
TEXT_SIZE = 0x4000
IDATA_RVA = TEXT_RVA + TEXT_SIZE
DATA_RVA = IDATA_RVA + 0x2000  # .pdata, then .xdata (amd64 unwind data), then writable data
DATA_SIZE = 0x2000
IMAGE_BASE = {"i386": 0x400000, "amd64": 0x140000000}
MACHINE = {"i386": 0x14C, "amd64": 0x8664}


@dataclass
class Layout:
    arch: str
    base: int
    iat: dict[str, int] = field(default_factory=dict)  # "dll!name" -> VA of its IAT slot
    data: int = 0  # VA of a writable, zeroed area of DATA_SIZE // 2 bytes

    @property
    def text(self) -> int:
        return self.base + TEXT_RVA

    def slot(self, dll: str, name: str) -> int:
        return self.iat[f"{dll.lower()}!{name}"]


def _import_section(rva: int, imports: dict[str, list[str]], pe64: bool) -> tuple[bytes, dict[str, int]]:
    thunk = 8 if pe64 else 4
    dlls = list(imports)
    desc_size = 20 * (len(dlls) + 1)
    # Per DLL: ILT, IAT (each names + 1 zero thunk), then DLL names and hint/name entries.
    offset = desc_size
    tables = []
    for dll in dlls:
        n = len(imports[dll]) + 1
        tables.append((offset, offset + n * thunk))
        offset += 2 * n * thunk
    strings = b""
    dll_name_off, hint_off = {}, {}
    for dll in dlls:
        dll_name_off[dll] = offset + len(strings)
        strings += dll.encode() + b"\0"
        strings += b"\0" * (len(strings) % 2)
        for name in imports[dll]:
            if name.startswith("#"):  # imported by ordinal: no hint/name entry
                continue
            hint_off[(dll, name)] = offset + len(strings)
            strings += b"\0\0" + name.encode() + b"\0"
            strings += b"\0" * (len(strings) % 2)
    fmt = "<Q" if pe64 else "<I"
    desc, thunks, slots = b"", b"", {}
    for dll, (ilt, iat) in zip(dlls, tables, strict=True):
        desc += struct.pack("<IIIII", rva + ilt, 0, 0, rva + dll_name_off[dll], rva + iat)
        by_ordinal = 1 << (8 * thunk - 1)  # IMAGE_ORDINAL_FLAG
        names = b"".join(
            struct.pack(fmt, by_ordinal | int(n[1:]) if n.startswith("#") else rva + hint_off[(dll, n)])
            for n in imports[dll]
        ) + bytes(thunk)
        thunks += names + names
        for i, name in enumerate(imports[dll]):
            slots[f"{dll.lower()}!{name}"] = rva + iat + i * thunk
    desc += bytes(20)
    return desc + thunks + strings, slots


def program(
    arch: str,
    code: Callable[[Layout], bytes],
    imports: dict[str, list[str]] | None = None,
    unwind: Callable[[Layout], tuple[bytes, bytes]] | None = None,
    data: bytes = b"",
) -> bytes:
    """A PE EXE whose entry point is the start of `code(layout)`; `data` starts at `layout.data`.

    `unwind(layout)` returns (.pdata, .xdata) for amd64: RUNTIME_FUNCTION entries (RVAs) and the
    UNWIND_INFO they point to, which must lie at DATA_RVA + 0x100 onwards (`.pdata` at DATA_RVA).
    """
    pe64 = arch == "amd64"
    base = IMAGE_BASE[arch]
    idata, slots = _import_section(IDATA_RVA, imports or {"kernel32.dll": ["ExitProcess"]}, pe64)
    layout = Layout(arch, base, {k: base + v for k, v in slots.items()}, base + DATA_RVA + DATA_SIZE // 2)
    text = code(layout)
    assert len(text) <= TEXT_SIZE
    initial, data = data, bytearray(DATA_SIZE)
    assert len(initial) <= DATA_SIZE // 2
    data[DATA_SIZE // 2 : DATA_SIZE // 2 + len(initial)] = initial
    exception_dir = (0, 0)
    if unwind is not None:
        pdata, xdata = unwind(layout)
        assert len(pdata) <= 0x100 and 0x100 + len(xdata) <= DATA_SIZE // 2
        data[: len(pdata)] = pdata
        data[0x100 : 0x100 + len(xdata)] = xdata
        exception_dir = (DATA_RVA, len(pdata))
    sections = [
        (b".text", TEXT_RVA, TEXT_SIZE, text, 0x60000020),  # code, execute, read
        (b".idata", IDATA_RVA, 0x2000, idata, 0xC0000040),  # initialised data, read, write
        (b".data", DATA_RVA, DATA_SIZE, bytes(data), 0xC0000040),
    ]
    opt_size = 0xF0 if pe64 else 0xE0
    headers = E_LFANEW + 4 + 20 + opt_size + 40 * len(sections)
    headers_raw = headers + (-headers % FILE_ALIGN)
    image_size = DATA_RVA + DATA_SIZE
    file_header = struct.pack("<HHIIIHH", MACHINE[arch], len(sections), 0, 0, 0, opt_size,
                              0x0022 if pe64 else 0x0102)  # fmt: skip
    std = struct.pack("<HBBIIII", 0x20B if pe64 else 0x10B, 14, 0, TEXT_SIZE, 0, 0, TEXT_RVA)
    std += struct.pack("<I", TEXT_RVA)  # BaseOfCode
    windows = struct.pack("<Q", base) if pe64 else struct.pack("<II", IDATA_RVA, base)  # PE32: BaseOfData
    windows += struct.pack("<IIHHHHHHIIII", SECT_ALIGN, FILE_ALIGN, 6, 0, 0, 0, 6, 0, 0, image_size,
                           headers_raw, 0)  # fmt: skip
    windows += struct.pack("<HH", 3, 0x8100)  # console subsystem; NX compatible, no ASLR
    sizes = (0x100000, 0x1000, 0x100000, 0x1000)
    windows += struct.pack("<QQQQ", *sizes) if pe64 else struct.pack("<IIII", *sizes)
    windows += struct.pack("<II", 0, 16)
    dirs = [(0, 0)] * 16
    dirs[1] = (IDATA_RVA, len(idata))
    dirs[3] = exception_dir
    optional = std + windows + b"".join(struct.pack("<II", *d) for d in dirs)
    assert len(optional) == opt_size, (len(optional), opt_size)
    table, body, raw_ptr = b"", b"", headers_raw
    for name, rva, vsize, raw, flags in sections:
        raw = raw + b"\0" * (-len(raw) % FILE_ALIGN)
        table += struct.pack("<8sIIIIIIHHI", name, vsize, rva, len(raw), raw_ptr, 0, 0, 0, 0, flags)
        body += raw
        raw_ptr += len(raw)
    dos = bytearray(E_LFANEW)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, E_LFANEW)
    head = bytes(dos) + b"PE\0\0" + file_header + optional + table
    return head + b"\0" * (headers_raw - len(head)) + body


def api_loop(arch: str, calls: int, dll: str = "kernel32.dll", name: str = "GetCurrentProcessId") -> bytes:
    """A program that calls one API without arguments `calls` times in a loop, then returns."""

    def code(lay: Layout) -> bytes:
        slot = lay.slot(dll, name)
        if arch == "i386":
            return (
                b"\xb9" + struct.pack("<I", calls)  # mov ecx, calls
                + b"\x51"  # loop: push ecx
                + b"\xff\x15" + struct.pack("<I", slot)  # call dword ptr [slot]
                + b"\x59"  # pop ecx
                + b"\x49"  # dec ecx
                + b"\x75\xf5"  # jne loop
                + b"\xc3"  # ret
            )  # fmt: skip
        loop = lay.text + 4 + 1 + 5  # after sub rsp / push rbx / mov ebx
        call_end = loop + 6
        return (
            b"\x48\x83\xec\x28"  # sub rsp, 0x28
            + b"\x53"  # push rbx
            + b"\xbb" + struct.pack("<I", calls)  # mov ebx, calls
            + b"\xff\x15" + struct.pack("<i", slot - call_end)  # loop: call qword ptr [rip + slot]
            + b"\xff\xcb"  # dec ebx
            + b"\x75\xf6"  # jne loop
            + b"\x5b"  # pop rbx
            + b"\x48\x83\xc4\x28"  # add rsp, 0x28
            + b"\xc3"  # ret
        )  # fmt: skip

    return program(arch, code, {dll: [name]})


class Data(int):
    """A call argument: the address `layout.data + offset`."""


class Word(int):
    """A call argument: the 32-bit value at `layout.data + offset` when the call is made."""


class Text(int):
    """A call argument: the address `layout.text + offset` (a function placed with `code_at`)."""


def calls(
    steps: list[tuple],
    data: bytes = b"",
    code_at: dict[int, Callable[[Layout], bytes]] | None = None,
    extra_imports: tuple[str, ...] = (),
) -> bytes:
    """An i386 EXE that makes the calls of `steps` in order, then returns.

    A step is ("dll!Name", [arguments], *options) ("dll!#N" imports ordinal N): an option "cdecl"
    pops the arguments after the call, a `Data` offset stores the result (eax) there.  An argument is
    an integer, a `Data` offset (an address in the data area), a `Word` offset (a value read from it
    then, so a test can pass what one API wrote to the next, whose recorded arguments show it) or a
    `Text` offset.
    `code_at` places more code (functions the APIs call back, given as functions of the layout) at
    offsets of the code section from 0x800 on; the APIs they call are named in `extra_imports`.
    """
    imports: dict[str, list[str]] = {}
    for target in [step[0] for step in steps] + list(extra_imports):
        dll, name = target.split("!")
        if name not in imports.setdefault(dll, []):
            imports[dll].append(name)

    def code(lay: Layout) -> bytes:
        out = b""
        for target, args, *options in steps:
            for a in reversed(args):
                if isinstance(a, Word):
                    out += b"\xff\x35" + struct.pack("<I", lay.data + a)  # push dword ptr [data + a]
                elif isinstance(a, Data | Text):  # push data + a, push text + a
                    out += b"\x68" + struct.pack("<I", (lay.data if isinstance(a, Data) else lay.text) + a)
                else:
                    out += b"\x68" + struct.pack("<I", a & 0xFFFFFFFF)  # push a
            out += b"\xff\x15" + struct.pack("<I", lay.slot(*target.split("!")))  # call [slot]
            if "cdecl" in options and args:
                out += b"\x83\xc4" + bytes([4 * len(args)])  # add esp, 4 * n
            for where in (o for o in options if isinstance(o, Data)):
                out += b"\xa3" + struct.pack("<I", lay.data + where)  # mov [data + where], eax
        out += b"\xc3"  # ret
        assert len(out) <= 0x800
        for offset, more in (code_at or {}).items():
            out = out.ljust(offset, b"\xcc") + more(lay)
        return out

    return program("i386", code, imports, data=data)


def data_area(*items: tuple[int, bytes], size: int = 0x400) -> bytes:
    """A `calls` data area of `size` zero bytes with each (offset, bytes) item written at its offset."""
    out = bytearray(size)
    for offset, value in items:
        out[offset : offset + len(value)] = value
    return bytes(out)


def ansi(text: str) -> bytes:
    """`text` as a NUL-terminated ANSI (code page 1252's Latin-1 range) string."""
    return text.encode("latin-1") + b"\0"


def utf16(text: str) -> bytes:
    """`text` as a NUL-terminated UTF-16 string."""
    return text.encode("utf-16-le") + b"\0\0"


def calls_by_name(trace) -> dict[str, list]:
    """The trace's API calls grouped by their name ("kernel32.Sleep"), in call order."""
    out: dict[str, list] = {}
    for c in trace.api_calls:
        out.setdefault(c.name, []).append(c)
    return out
