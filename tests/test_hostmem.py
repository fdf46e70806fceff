"""Host-backed unicorn memory (hostmem.py): the bytes stay where they belong, the recorder reads them."""

import contextlib

import pytest
import unicorn
from unicorn import x86_const

from runtrace.trace.emulate import hostmem
from runtrace.trace.emulate.recorder import BlockRecorder

BASE = 0x400000
STACK = 0x100000


def _engine() -> unicorn.Uc:
    hostmem.install()
    return unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)


def _ranges(uc: unicorn.Uc) -> dict[int, int]:
    engine = hostmem._engines.get(uc._uch.value)
    return {} if engine is None else {start: stop for start, (stop, _, _) in engine.ranges.items()}


def test_protecting_or_unmapping_part_of_a_region_keeps_every_byte_where_it_was():
    # unicorn 1 splits such a region over the wrong host memory when it is host-backed: the pieces
    # read the bytes of another mapping (0x100000's 'A's here).
    uc = _engine()
    uc.mem_map(0x100000, 0x10000)
    uc.mem_write(0x100000, b"A" * 0x10000)
    uc.mem_map(0x800000, 0x3000)
    uc.mem_write(0x800000, b"C" * 0x1000 + b"D" * 0x1000 + b"E" * 0x1000)
    uc.mem_protect(0x801000, 0x1000, unicorn.UC_PROT_READ)
    assert [bytes(uc.mem_read(a, 2)) for a in (0x800000, 0x801000, 0x802000)] == [b"CC", b"DD", b"EE"]
    assert sorted(uc.mem_regions()) == [(0x100000, 0x10FFFF, 7), (0x800000, 0x800FFF, 7),
                                        (0x801000, 0x801FFF, 1), (0x802000, 0x802FFF, 7)]  # fmt: skip
    uc.mem_unmap(0x802000, 0x1000)
    uc.mem_write(0x800FFE, b"xy")
    assert bytes(uc.mem_read(0x800FFE, 4)) == b"xyDD"
    assert _ranges(uc) == {0x100000: 0x110000, 0x800000: 0x802000}


def test_a_call_unicorn_refuses_leaves_the_regions_as_they_were():
    uc = _engine()
    uc.mem_map(0x400000, 0x2000)
    for call in (lambda: uc.mem_protect(0x401000, 0x2000, unicorn.UC_PROT_READ),  # 0x402000 unmapped
                 lambda: uc.mem_unmap(0x401000, 0x2000),
                 lambda: uc.mem_protect(0x401000, 0x800, unicorn.UC_PROT_READ)):  # fmt: skip
        with pytest.raises(unicorn.UcError):
            call()
        assert list(uc.mem_regions()) == [(0x400000, 0x401FFF, 7)]


def test_memory_is_given_back_when_all_of_it_is_unmapped_or_the_engine_closes():
    uc = _engine()
    uc.mem_map(0x400000, 0x4000)
    uc.mem_unmap(0x401000, 0x1000)
    uc.mem_unmap(0x400000, 0x1000)
    assert _ranges(uc) == {0x402000: 0x404000}
    uc.mem_unmap(0x402000, 0x2000)
    assert _ranges(uc) == {}
    uc.mem_map(0x400000, 0x1000)
    key = uc._uch.value
    del uc
    assert key not in hostmem._engines


def _record(uc: unicorn.Uc, recorder: BlockRecorder, start: int, until: int) -> None:
    uc.reg_write(x86_const.UC_X86_REG_ESP, STACK + 0x8000)
    with contextlib.suppress(unicorn.UcError):
        uc.emu_start(start, until)


def test_code_the_program_rewrites_is_recorded_as_it_ran():
    # call f; mov byte [f+1], 2; call f; f: mov al, 1; ret  -- the second call runs `mov al, 2`
    uc = _engine()
    uc.mem_map(BASE, 0x1000)
    uc.mem_map(STACK, 0x10000)
    f = BASE + 0x100
    code = b"\xe8" + (f - (BASE + 5)).to_bytes(4, "little", signed=True)
    code += b"\xc6\x05" + (f + 1).to_bytes(4, "little") + b"\x02"
    code += b"\xe8" + (f - (BASE + len(code) + 5)).to_bytes(4, "little", signed=True)
    uc.mem_write(BASE, code)
    uc.mem_write(f, b"\xb0\x01\xc3")
    recorder = BlockRecorder(uc, 32, 0)
    _record(uc, recorder, BASE, BASE + len(code))
    ran = [recorder.raw_blocks[v] for v in recorder.visits().tolist()]
    assert [d for a, d in ran if a == f] == [b"\xb0\x01\xc3", b"\xb0\x02\xc3"]
    assert recorder.rewritten_visits == 1
    assert uc.reg_read(x86_const.UC_X86_REG_AL) == 2
    recorder.close()


def test_code_mapped_anew_at_the_same_address_is_recorded_with_its_new_bytes():
    uc = _engine()
    uc.mem_map(STACK, 0x10000)
    recorder = BlockRecorder(uc, 32, 0)
    for code in (b"\x40\x40\x90", b"\x48\x48\x90"):  # inc eax x2 / dec eax x2, same size
        uc.mem_map(BASE, 0x1000)
        uc.mem_write(BASE, code)
        _record(uc, recorder, BASE, BASE + len(code))
        uc.mem_unmap(BASE, 0x1000)
    ran = [recorder.raw_blocks[v][1] for v in recorder.visits().tolist()]
    assert ran == [b"\x40\x40\x90", b"\x48\x48\x90"]
    assert recorder.rewritten_visits == 1
    recorder.close()
