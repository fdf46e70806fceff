"""The native recorder on bare unicorn: what it records when unicorn's block hook alone would be wrong."""

import contextlib
import random

import pytest
import unicorn
from unicorn import x86_const

from runtrace.trace.blocks import canonicalize
from runtrace.trace.disasm import _one_by_one, decode_one, disassemble_run, executed_code, executed_lengths
from runtrace.trace.emulate.recorder import BlockRecorder

BASE = 0x400000
STACK = 0x100000


def _run(code: bytes, until: int | None = None, cap: int = 0, foreign=None, extra: dict | None = None):
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    uc.mem_map(BASE, 0x10000)
    uc.mem_write(BASE, code)
    for address, data in (extra or {}).items():
        uc.mem_map(address, 0x1000)
        uc.mem_write(address, data)
    uc.mem_map(STACK, 0x10000)
    uc.reg_write(x86_const.UC_X86_REG_ESP, STACK + 0x8000)
    recorder = BlockRecorder(uc, 32, cap, foreign=foreign)
    with contextlib.suppress(unicorn.UcError):  # a fault ends the run, as it would end an entry point
        uc.emu_start(BASE, until if until is not None else BASE + len(code))
    raw = recorder.visits()
    blocks, visits, groups = canonicalize(recorder.raw_blocks, raw, 32, recorder.raw_code)
    # What the recorder decoded while recording is what canonicalize decodes on its own.
    again = canonicalize(recorder.raw_blocks, raw, 32)
    assert (blocks, visits.tolist(), groups.tolist()) == (again[0], again[1].tolist(), again[2].tolist())
    return recorder, [blocks[v] for v in visits.tolist()]


def test_a_straight_run_longer_than_unicorns_block_limit_is_recorded_whole():
    # unicorn cuts a long run of instructions into translation blocks, reports the first with size 0
    # and the rest without a block hook at all: a block hook alone records none of it.
    recorder, visits = _run(b"\x40" * 3000 + b"\xeb\xfe", until=BASE + 3000)  # inc eax x 3000; jmp $
    assert [(b.address, b.instruction_count) for b in visits] == [(BASE, 3000)]
    assert recorder.instruction_count == 3000
    assert recorder.orphan_instructions == 3000


def test_a_block_left_at_a_fault_is_recorded_up_to_the_faulting_instruction():
    # nop; nop; mov eax, [0] (unmapped); nop; nop; ret -- the last three never run.
    recorder, visits = _run(b"\x90\x90\xa1\x00\x00\x00\x00\x90\x90\xc3")
    assert [(b.address, b.instruction_count) for b in visits] == [(BASE, 3)]
    assert recorder.instruction_count == 3
    assert recorder.truncated_visits == 1


def test_code_that_is_not_the_programs_is_never_recorded():
    # call 0x500000 (a stand-in for the emulator's own code: ret); then nop; jmp $
    code = b"\xe8" + (0x500000 - (BASE + 5)).to_bytes(4, "little") + b"\x90\xeb\xfe"
    uc_extra = {0x500000: b"\xc3"}

    def foreign(address: int) -> bool:
        return address >= 0x500000

    recorder, visits = _run(code, until=BASE + 6, foreign=foreign, extra=uc_extra)
    assert [b.address for b in visits] == [BASE, BASE + 5]
    assert all(b.address < 0x500000 for b in visits)


def test_the_instruction_cap_stops_between_blocks():
    # A loop of 4 instructions: inc eax; inc ebx; dec ecx; jmp BASE.
    recorder, visits = _run(b"\x40\x43\x49\xeb\xfb", until=BASE + 0x1000, cap=10)
    assert recorder.stopped == 1
    # The block that reaches the cap runs whole; the next one is not started.
    assert recorder.instruction_count == 12
    assert sum(b.instruction_count for b in visits) == 12


def test_executed_bytes_capstone_cannot_decode_stay_one_instruction():
    # `lock in eax, dx` (f0 ed): unicorn runs it, capstone refuses it.
    assert executed_lengths(b"\x90\xf0\xed", 0x1000, 32) == (1, 2)
    assert executed_lengths(bytes.fromhex("f0394000cc"), 0x1000, 32) == (4, 1)  # lock cmp; int3
    assert executed_lengths(b"\x90\xff\xff", 0x1000, 32) == (1, 2)  # undecodable: one of the rest
    assert executed_lengths(b"\x90\x90", 0x1000, 32) == (1, 1)


# Blocks ending in a prefix capstone refuses alone, undecodable bytes, a `repz ret`, or nothing at all.
_TAILS = [b"\x90\xf0\xed", bytes.fromhex("f0394000cc"), b"\x90\xff\xff", b"\x90\x90", b"\x55\x8b\xec\x74\x02"]
_TAILS += [b"\xc3", b"", bytes.fromhex("e8000000005d"), bytes.fromhex("f3c3"), bytes.fromhex("3e0f0b")]


@pytest.mark.parametrize("bits", [32, 64])
def test_one_pass_decoding_gives_what_decoding_each_instruction_alone_gives(bits):
    """`executed_code`'s last mnemonic is `decode_one`'s of the last instruction (None where a prefix or
    bytes capstone refuses end the block), and `disassemble_run`'s single pass gives `_one_by_one`'s
    instructions, on blocks as the tracer records them and on lengths capstone would not decode to."""
    rng = random.Random(bits)
    blocks = _TAILS + [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(3000)]
    for data in blocks:
        lengths, last = executed_code(data, 0x401000, bits)
        assert lengths == executed_lengths(data, 0x401000, bits)
        if last is not None:
            end = len(data) - lengths[-1]
            assert decode_one(data[end:], 0x401000 + end, bits).mnemonic == last
        assert disassemble_run(data, 0x401000, lengths, bits) == _one_by_one(data, 0x401000, lengths, bits)
        # Lengths the bytes do not decode to (a prefix taken alone): each instruction from its own bytes.
        split = tuple(x for n in lengths for x in ((1, n - 1) if n > 1 else (n,)))
        assert disassemble_run(data, 0x401000, split, bits) == _one_by_one(data, 0x401000, split, bits)
