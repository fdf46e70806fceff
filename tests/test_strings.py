"""Strings read from emulated memory a page at a time are Speakeasy's own (trace/emulate/strings.py)."""

import importlib
import random
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtrace.trace.emulate import speakeasy_loader, strings

# Through the loader, as the tracer imports them (its lean imports of unicorn and Speakeasy come first).
unicorn = speakeasy_loader.load_unicorn()
BinaryEmulator = importlib.import_module("speakeasy.binemu").BinaryEmulator
UcError = unicorn.UcError

PAGE = strings.PAGE
BASE = 0x10000  # three pages mapped from here; the page after them is not


def _memory(content: bytes):
    """Speakeasy's string readers and runtrace's over the same unicorn memory."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    uc.mem_map(BASE, 3 * PAGE)
    uc.mem_write(BASE, content[: 3 * PAGE])
    emu = SimpleNamespace(mem_read=lambda address, size: bytes(uc.mem_read(address, size)))
    speakeasy = SimpleNamespace(
        read=lambda *a, **k: BinaryEmulator.read_mem_string(emu, *a, **k),
        length=lambda *a, **k: BinaryEmulator.mem_string_len(emu, *a, **k),
    )
    ours = SimpleNamespace(mem_read=emu.mem_read)
    strings.install(ours)
    return speakeasy, SimpleNamespace(read=ours.read_mem_string, length=ours.mem_string_len)


def _outcome(function, *args, **kwargs):
    try:
        return "ok", function(*args, **kwargs)
    except UcError as e:
        return "UcError", e.errno


def _same(speakeasy, ours, address: int, width: int, max_chars: int = 0) -> None:
    assert _outcome(ours.read, address, width, max_chars=max_chars) == _outcome(
        speakeasy.read, address, width, max_chars=max_chars
    )
    assert _outcome(ours.length, address, width) == _outcome(speakeasy.length, address, width)


def test_strings_within_across_and_past_the_mapped_pages():
    memory = bytearray(b"A" * (3 * PAGE))
    memory[0:6] = b"hello\0"
    memory[PAGE - 3 : PAGE + 2] = b"abc\0d"[:5]  # crosses nothing: NUL before the boundary
    memory[2 * PAGE - 2 : 2 * PAGE + 3] = b"xy" + b"z\0\0"  # crosses into the third page
    memory[100:106] = "wi\0".encode("utf-16-le")
    memory[2 * PAGE - 1 : 2 * PAGE + 5] = "é\0\0".encode("utf-16-le")  # wide, odd address, straddling
    speakeasy, ours = _memory(bytes(memory))
    cases = [
        (BASE, 1), (BASE, 2), (BASE + 5, 1), (BASE + 100, 2), (BASE + PAGE - 3, 1),
        (BASE + 2 * PAGE - 2, 1), (BASE + 2 * PAGE - 1, 2), (BASE + 200, 1), (BASE + 201, 2),
        (BASE + 2 * PAGE + 10, 1), (BASE + 3 * PAGE - 1, 1), (BASE + 3 * PAGE - 1, 2),  # no NUL: unmapped
        (BASE + 3 * PAGE, 1), (0x5000, 2),  # unmapped from the start
    ]  # fmt: skip
    for address, width in cases:
        for max_chars in (0, 1, 2, 7, PAGE + 3):
            _same(speakeasy, ours, address, width, max_chars)
    assert ours.read(BASE, 1) == "hello"
    assert ours.length(BASE + 100, 2) == 2
    with pytest.raises(UcError):
        ours.read(BASE + 2 * PAGE + 10, 1)  # "AAA..." up to the unmapped page: no NUL before it


def test_a_nul_byte_pair_across_two_wide_characters_is_not_the_end():
    memory = bytearray(b"\x41" * (3 * PAGE))
    memory[0:8] = b"A\0\0BC\0\0\0"  # 0x0041 0x4200 0x0043 0x0000
    speakeasy, ours = _memory(bytes(memory))
    _same(speakeasy, ours, BASE, 2)
    assert ours.read(BASE, 2) == "A\u4200C"


def test_other_widths_are_refused_as_speakeasy_refuses_them():
    speakeasy, ours = _memory(b"\0" * PAGE)
    for read in (speakeasy.read, ours.read):
        with pytest.raises(ValueError, match="Invalid string encoding"):
            read(BASE, 4)


def _content(seed: int, zeros: float) -> bytes:
    """Three pages of random bytes, each zero with probability `zeros`."""
    rnd = random.Random(seed)
    return bytes(0 if rnd.random() < zeros else rnd.randrange(1, 256) for _ in range(3 * PAGE))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**32),
    st.sampled_from([0.0, 0.0005, 0.01, 0.3]),
    st.sampled_from([0, 1, PAGE - 5, PAGE - 1, 2 * PAGE - 1, 2 * PAGE, 3 * PAGE - 3, 3 * PAGE]),
    st.integers(0, 16),
    st.sampled_from([1, 2]),
    st.sampled_from([0, 0, 1, 3, 64, 5000]),
)
def test_any_memory_reads_as_speakeasy_reads_it(seed, zeros, page_offset, extra, width, max_chars):
    speakeasy, ours = _memory(_content(seed, zeros))
    _same(speakeasy, ours, BASE + page_offset + extra, width, max_chars)
