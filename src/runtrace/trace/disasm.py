"""Disassembly with capstone, and the one rule that cuts an instruction stream into basic blocks.

This module knows bytes, addresses and instruction lengths only; the trace model (`model.py`) builds on
it, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import capstone

from runtrace.trace.asmsyntax import mnemonic_of

# Mnemonics after which control does not simply fall through to the next instruction.  Conditional
# jumps all start with "j"; the rest are listed.  Intel syntax, as capstone prints it.
_TRANSFERS = frozenset(
    {
        "call", "ret", "retf", "retn", "iret", "iretd", "iretq", "loop", "loope", "loopne",
        "int", "int1", "int3", "into", "syscall", "sysenter", "sysret", "sysexit", "ud2", "hlt",
    }
)  # fmt: skip


def is_control_transfer(mnemonic: str) -> bool:
    m = mnemonic.lower()
    # Prefixes capstone keeps in the mnemonic: "bnd jmp", "notrack call", and "repz ret" (f3 c3, the
    # two-byte return AMD recommended for branch targets).
    while m.startswith(("bnd ", "notrack ", "rep ", "repz ", "repe ", "repnz ", "repne ")):
        m = m.split(" ", 1)[1]
    return m.startswith("j") or m in _TRANSFERS


@dataclass(frozen=True, slots=True)
class Instruction:
    address: int
    data: bytes
    mnemonic: str
    op_str: str

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def text(self) -> str:
        return f"{self.mnemonic} {self.op_str}".rstrip()


@cache
def disassembler(bits: int) -> capstone.Cs:
    mode = capstone.CS_MODE_32 if bits == 32 else capstone.CS_MODE_64
    return capstone.Cs(capstone.CS_ARCH_X86, mode)


def instruction_lengths(data: bytes, address: int, bits: int) -> tuple[int, ...]:
    """Lengths of the instructions that decode from data; stops at the first undecodable byte."""
    return tuple(size for _, size, _, _ in disassembler(bits).disasm_lite(data, address))


_PREFIXES = frozenset(b"\xf0\xf2\xf3\x2e\x36\x3e\x26\x64\x65\x66\x67")


def executed_lengths(data: bytes, address: int, bits: int) -> tuple[int, ...]:
    """Instruction lengths covering all of `data`, bytes the CPU emulator executed.

    unicorn runs a few encodings capstone refuses, nearly all a prefix an instruction does not take
    (`lock in eax, dx`, `lock cmp`: a real CPU faults, which is why some malware uses them to detect
    emulators): such an instruction is the prefix plus what decodes after it.  Anything else capstone
    cannot decode is kept as one instruction of the remaining length, rather than dropped; both show
    as `(bad)`.
    """
    return executed_code(data, address, bits)[0]


def executed_code(data: bytes, address: int, bits: int) -> tuple[tuple[int, ...], str | None]:
    """`executed_lengths`, and the mnemonic of the last instruction as `decode_one` gives it when that is
    known from the same pass (None: it came from a prefix or bytes capstone refuses; decode it alone).

    The last instruction decoded in the pass over `data[offset:]` was decoded from the bytes that end
    `data`, exactly what `decode_one` of those bytes reads, so its mnemonic is the same."""
    cs = disassembler(bits)
    lengths: list[int] = []
    offset = 0
    last = None
    while offset < len(data):
        last = None
        for _, size, mnemonic, _ in cs.disasm_lite(data[offset:], address + offset):
            lengths.append(size)
            offset += size
            last = mnemonic
        if offset >= len(data):
            break
        last = None
        if data[offset] in _PREFIXES:
            rest = next(cs.disasm_lite(data[offset + 1 :], address + offset + 1, 1), None)
            if rest is not None:
                lengths.append(1 + rest[1])
                offset += 1 + rest[1]
                continue
        lengths.append(len(data) - offset)
        break
    return tuple(lengths), last


def disassemble_run(data: bytes, address: int, lengths: tuple[int, ...], bits: int) -> list[Instruction]:
    """The instructions of consecutive bytes whose lengths are known; undecodable ones as `(bad)`.

    One capstone pass over the bytes while what it decodes has the known lengths (a call per block
    rather than per instruction: less than half the time, and disassembly is most of encoding a trace
    for the model); from the first instruction that differs (bytes capstone refuses, a prefix the
    CPU emulator ran alone) each instruction is decoded from its own bytes, as `_one_by_one` always
    did.  Both give the same instructions: over 7 million instructions of corpus traces, none
    differed."""
    out = []
    k, offset, count = 0, 0, len(lengths)
    for _, size, mnemonic, op_str in disassembler(bits).disasm_lite(data, address):
        if k == count or size != lengths[k]:
            break
        out.append(Instruction(address + offset, data[offset : offset + size], mnemonic, op_str))
        offset += size
        k += 1
    if k < count:
        out += _one_by_one(data[offset:], address + offset, lengths[k:], bits)
    return out


def _one_by_one(data: bytes, address: int, lengths: tuple[int, ...], bits: int) -> list[Instruction]:
    out = []
    addr, offset = address, 0
    cs = disassembler(bits)
    for n in lengths:
        raw = data[offset : offset + n]
        decoded = next(cs.disasm_lite(raw, addr, 1), None)
        if decoded is None:
            out.append(Instruction(addr, raw, "(bad)", ""))
        else:
            out.append(Instruction(addr, raw, decoded[2], decoded[3]))
        addr += n
        offset += n
    return out


def decode_one(data: bytes, address: int, bits: int) -> Instruction | None:
    decoded = next(disassembler(bits).disasm_lite(data, address, 1), None)
    if decoded is None:
        return None
    _, size, mnemonic, op_str = decoded
    return Instruction(address, bytes(data[:size]), mnemonic, op_str)


def text_instructions(address: int, lengths: tuple[int, ...], texts: tuple[str, ...]) -> list[Instruction]:
    """Instructions known only by their disassembly text (text trace logs): no bytes."""
    out, addr = [], address
    for n, text in zip(lengths, texts, strict=True):
        mnemonic = mnemonic_of(text)
        out.append(Instruction(addr, b"", mnemonic, text[len(mnemonic) :].strip()))
        addr += n
    return out
