"""Disassembly with capstone, and the one rule that cuts an instruction stream into basic blocks."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import capstone

from runtrace.trace.asmsyntax import mnemonic_of

if TYPE_CHECKING:
    from runtrace.trace.model import Arch, BasicBlock

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


def disassemble_block(block: BasicBlock, arch: Arch) -> list[Instruction]:
    if block.texts:
        return _text_instructions(block)
    out = []
    data, addr, offset = block.data, block.address, 0
    cs = disassembler(arch.bits)
    for n in block.insn_lengths:
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


def _text_instructions(block: BasicBlock) -> list[Instruction]:
    out, addr = [], block.address
    for n, text in zip(block.insn_lengths, block.texts, strict=True):
        mnemonic = mnemonic_of(text)
        out.append(Instruction(addr, b"", mnemonic, text[len(mnemonic) :].strip()))
        addr += n
    return out
