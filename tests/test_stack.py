"""The main thread's stack is the image's SizeOfStackReserve (stack.py), not Speakeasy's 72 KiB."""

import struct

from emu_pe import E_LFANEW, program
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.emulate.stack import DEFAULT_RESERVE, MAX_RESERVE, main_stack_size
from runtrace.trace.model import StopReason

RESERVE_AT = E_LFANEW + 24 + 72  # SizeOfStackReserve in the optional header (PE32 and PE32+)


def _probe(pages: int) -> bytes:
    """A program that touches its stack a page at a time `pages` pages down (as `_chkstk` does for a
    large frame), writes there, and returns."""
    code = (
        b"\xb9" + struct.pack("<I", pages)  # mov ecx, pages
        + b"\x89\xe0"  # mov eax, esp
        + b"\x2d\x00\x10\x00\x00"  # loop: sub eax, 0x1000
        + b"\x85\x00"  # test [eax], eax
        + b"\x49"  # dec ecx
        + b"\x75\xf6"  # jne loop
        + b"\x89\x00"  # mov [eax], eax
        + b"\xc3"  # ret
    )  # fmt: skip
    return program("i386", lambda lay: code)


def _with_reserve(image: bytes, reserve: int, pe64: bool = False) -> bytes:
    out = bytearray(image)
    struct.pack_into("<Q" if pe64 else "<I", out, RESERVE_AT, reserve)
    return bytes(out)


def test_the_stack_size_is_the_exes_reserve():
    image = _probe(1)
    assert main_stack_size(image) == 0x100000  # emu_pe's header asks for 1 MiB
    assert main_stack_size(_with_reserve(image, 0x400000)) == 0x400000
    assert main_stack_size(_with_reserve(image, 0x20001)) == 0x21000  # whole pages
    assert main_stack_size(_with_reserve(image, 0)) == DEFAULT_RESERVE
    assert main_stack_size(_with_reserve(image, 0x7FFF0000)) == MAX_RESERVE
    pe64 = program("amd64", lambda lay: b"\xc3")
    assert main_stack_size(_with_reserve(pe64, 0x300000, pe64=True)) == 0x300000
    dll = bytearray(image)
    characteristics = E_LFANEW + 22
    struct.pack_into("<H", dll, characteristics, struct.unpack_from("<H", dll, characteristics)[0] | 0x2000)
    assert main_stack_size(_with_reserve(bytes(dll), 0x400000)) == DEFAULT_RESERVE  # the host's


def test_a_large_frame_fits_in_the_stack():
    # 256 KiB of stack, more than Speakeasy's 72 KiB: before, each page below it was an access
    # violation, mapped as a zero page.
    trace = emulate(_probe(64), "x", "stack")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    assert not [e for e in trace.meta.events if e["type"] == "zero_pages"]
    assert trace.instruction_count == 2 + 4 * 64 + 2


def test_past_the_reserve_the_stack_ends():
    trace = emulate(_with_reserve(_probe(64), 0x20000), "x", "stack")
    pages = [e for e in trace.meta.events if e["type"] == "zero_pages"]
    assert pages and pages[0]["count"] >= 64 - 0x20000 // 0x1000
