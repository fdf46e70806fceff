"""The vsprintf family's formatting and output bounds, against a flat fake memory."""

import struct

import pytest

from runtrace.trace.emulate import crtformat


class Memory:
    def __init__(self) -> None:
        self.mem = bytearray(0x10000)
        self.top = 0x100

    def put(self, data: bytes) -> int:
        address, self.top = self.top, self.top + len(data) + 16
        self.mem[address : address + len(data)] = data
        return address

    def mem_write(self, address: int, data: bytes) -> None:
        self.mem[address : address + len(data)] = data

    def mem_read(self, address: int, size: int) -> bytes:
        if address >= len(self.mem):
            raise ValueError("unmapped")
        return bytes(self.mem[address : address + size])

    def read_mem_string(self, address: int, width: int, max_chars: int = 0) -> str:
        raw = bytes(self.mem[address:])
        end = next(i for i in range(0, len(raw), width) if raw[i : i + width] == b"\0" * width)
        return raw[:end].decode("latin-1" if width == 1 else "utf-16-le")


def va_list(mem: Memory, ptr: int, *items) -> int:
    """Arguments laid out as the caller pushes them: ints in a slot (8 bytes for 'q'), doubles 8."""
    data = b""
    for kind, value in items:
        if kind == "d":
            data += struct.pack("<d", value)
        elif kind == "q":
            data += struct.pack("<q", value)
        else:
            data += value.to_bytes(ptr, "little", signed=value < 0)
    return mem.put(data)


@pytest.mark.parametrize("ptr", [4, 8])
def test_conversions_widths_and_precisions(ptr):
    mem = Memory()
    name, wname = mem.put(b"world\0"), mem.put("wide\0".encode("utf-16-le"))
    va = va_list(mem, ptr, ("i", -42), ("i", 255), ("i", 5), ("i", 7), ("i", name), ("i", name),
                 ("q", 1 << 40), ("d", 3.25), ("i", ord("x")), ("i", wname), ("i", 0))  # fmt: skip
    text = crtformat.format_va(
        "%d|%04X|%-*d|%.3s|%5.2s|%I64u|%.1f|%c|%ls|%s|100%%",
        crtformat.VaList(mem.mem_read, va, ptr),
        lambda a, w: mem.read_mem_string(a, 2 if w else 1),
        wide_function=False,
    )
    assert text == f"-42|00FF|{7:<5}|wor|   wo|{1 << 40}|3.2|x|wide|(null)|100%"


def _call(mem: Memory, name: str, bits: int, **named) -> int:
    (handler,) = [h for n, _, h in crtformat.Formatter(mem, bits).handlers() if n == name]
    layout, _ = crtformat._FAMILY[name]
    slots = [f for f in layout for _ in range(2 if f == "opt" and bits == 32 else 1)]
    return handler([named.get(f, 0) for f in slots])


@pytest.mark.parametrize("bits", [32, 64])
def test_measuring_then_formatting_as_programs_do(bits):
    mem, ptr = Memory(), bits // 8
    fmt, arg = mem.put(b"%s\\%u.log\0"), mem.put(b"C:\\temp\0")
    va = va_list(mem, ptr, ("i", arg), ("i", 12))
    assert _call(mem, "_vscprintf", bits, fmt=fmt, va=va) == len("C:\\temp\\12.log")
    buf = mem.put(b"\xee" * 32)
    # The universal CRT, C99 behaviour: measure with (NULL, 0), then format.
    assert _call(mem, "__stdio_common_vsprintf", bits, opt=2, buf=0, count=0, fmt=fmt, va=va) == 14
    assert _call(mem, "__stdio_common_vsprintf", bits, opt=2, buf=buf, count=15, fmt=fmt, va=va) == 14
    assert mem.mem_read(buf, 15) == b"C:\\temp\\12.log\0"
    # Too small: C99 cuts and terminates; the legacy _vsnprintf cuts without a NUL and returns -1.
    assert _call(mem, "vsnprintf", bits, buf=buf, count=4, fmt=fmt, va=va) == 14
    assert mem.mem_read(buf, 4) == b"C:\\\0"
    mem.mem_write(buf, b"\xee" * 32)
    assert _call(mem, "_vsnprintf", bits, buf=buf, count=4, fmt=fmt, va=va) == -1
    assert mem.mem_read(buf, 5) == b"C:\\t\xee"
    assert _call(mem, "vsprintf_s", bits, buf=buf, size=8, fmt=fmt, va=va) == -1
    assert mem.mem_read(buf, 8) == b"C:\\temp\0"


def test_wide_functions_take_wide_formats_and_strings():
    mem = Memory()
    fmt, arg = mem.put("%s=%d\0".encode("utf-16-le")), mem.put("n\0".encode("utf-16-le"))
    va, buf = va_list(mem, 8, ("i", arg), ("i", 3)), mem.put(b"\0" * 32)
    assert _call(mem, "__stdio_common_vswprintf", 64, opt=2, buf=buf, count=16, fmt=fmt, va=va) == 3
    assert mem.mem_read(buf, 8) == "n=3\0".encode("utf-16-le")


def test_an_unreadable_argument_gives_the_error_return_not_an_exception():
    mem = Memory()
    fmt = mem.put(b"%d %d\0")
    assert _call(mem, "_vscprintf", 32, fmt=fmt, va=0xFFFFF0) == -1
