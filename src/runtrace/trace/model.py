"""The one in-memory run trace that every backend produces and every later stage reads.

A run trace is stored the way it is recorded: a dictionary of distinct basic blocks (address and raw
bytes, with instruction boundaries) and the ordered sequence of block visits.  A million executed
instructions are typically a few hundred distinct blocks and a couple of hundred thousand visits, so
the sequence is a compact integer array and every instruction is disassembled once, not once per visit.

A *basic block* here is canonical whatever the source: a run of instructions executed one after another
that ends at a control-transfer instruction (or where the next executed instruction is not the next one
in memory).  Emulated traces and imported debugger traces therefore split into the same blocks.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from runtrace.trace.disasm import Instruction, disassemble_run, text_instructions


class StopReason(enum.StrEnum):
    """Why a trace ended, from the tracer's point of view."""

    EXITED = "exited"  # every entry point ran to its end (or the program exited)
    INSTRUCTION_CAP = "instruction_cap"
    TIMEOUT = "timeout"
    EMULATION_FAULT = "emulation_fault"  # invalid memory access, invalid instruction, ...
    API_LIMIT = "api_limit"
    MEMORY_LIMIT = "memory_limit"
    CRASHED = "crashed"  # the tracer child died
    IMPORTED = "imported"  # read from a debugger's trace file: the tracer did not decide


class Arch(enum.StrEnum):
    X86 = "x86"
    AMD64 = "amd64"

    @property
    def bits(self) -> int:
        return 32 if self is Arch.X86 else 64


@dataclass(frozen=True, slots=True)
class BasicBlock:
    address: int
    data: bytes  # raw bytes; empty when the source only gave disassembly text (text trace logs)
    insn_lengths: tuple[int, ...]  # byte length of each instruction, in order
    # Disassembly ("mnemonic operands", capstone Intel syntax) per instruction, only for blocks without
    # bytes; blocks with bytes are disassembled with capstone on demand.
    texts: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return len(self.data) if self.data else sum(self.insn_lengths)

    @property
    def instruction_count(self) -> int:
        return len(self.insn_lengths)

    @property
    def end(self) -> int:
        return self.address + self.size

    def instructions(self, arch: Arch) -> list[Instruction]:
        if self.texts:
            return text_instructions(self.address, self.insn_lengths, self.texts)
        return disassemble_run(self.data, self.address, self.insn_lengths, arch.bits)

    def instruction_addresses(self) -> list[int]:
        out, addr = [], self.address
        for n in self.insn_lengths:
            out.append(addr)
            addr += n
        return out


@dataclass(frozen=True, slots=True)
class ApiCall:
    position: int  # index into Trace.visits of the block whose last instruction made the call
    name: str  # "kernel32.CreateFileA"
    return_address: int
    supported: bool = True  # False: the emulator had no handler and stubbed it
    # The arguments as the emulator's handler read them: integers, and strings where the handler
    # dereferenced a string argument (a path, a key, a host name); empty when unknown (a stubbed call,
    # a trace from a debugger).  `result` is the value returned, None when unknown.
    args: tuple[int | str, ...] = ()
    result: int | None = None

    def signature(self, result: bool = True, max_string: int | None = None) -> str:
        """`kernel32.CreateFileA("C:\\notes.txt", 0x80000000, ...) = 0x80` as far as it is known; without
        the result, or with string arguments cut to `max_string` characters (and an ellipsis), on request."""
        shown = ", ".join(_show_arg(a, max_string) for a in self.args)
        text = f"{self.name}({shown})" if self.args else self.name
        return text if self.result is None or not result else f"{text} = {self.result:#x}"


def _show_arg(value: int | str, max_string: int | None = None) -> str:
    if isinstance(value, str):
        if max_string is not None and len(value) > max_string:
            value = value[:max_string] + "…"
        return json.dumps(value, ensure_ascii=False)
    return f"{value:#x}" if value > 9 or value < 0 else str(value)


@dataclass(frozen=True, slots=True)
class EntryPoint:
    kind: str  # "entry" (EXE), "DllMain", "export", "tls", "python" (module exec slot), "thread", "callback"
    name: str
    address: int
    first_visit: int  # index into Trace.visits where this entry's run begins


@dataclass(slots=True)
class TraceMeta:
    sha256: str
    arch: Arch
    source: str  # "emulator", "x64dbg", "x64dbg-text", "ollydbg"
    stop_reason: StopReason = StopReason.IMPORTED
    stop_detail: str = ""
    wall_time_s: float = 0.0
    tracer_version: str = ""
    settings: dict = field(default_factory=dict)
    file_name: str = ""
    image_base: int = 0
    entry_points: list[EntryPoint] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # notable tracer events (faults, stubs, ...)
    # What the program did to the emulated machine (files, registry, network, processes, mutexes,
    # strings it passed to APIs): see trace/emulate/behaviour.py; empty for imported traces.
    behaviour: dict = field(default_factory=dict)


@dataclass(eq=False)
class Trace:
    meta: TraceMeta
    blocks: list[BasicBlock]  # the block dictionary; a block's id is its index here
    visits: np.ndarray  # uint32 block ids, in execution order
    api_calls: list[ApiCall] = field(default_factory=list)
    threads: np.ndarray | None = None  # uint32 thread id per visit; None when single-threaded

    def __post_init__(self) -> None:
        self.visits = np.ascontiguousarray(self.visits, dtype=np.uint32)
        if self.threads is not None:
            self.threads = np.ascontiguousarray(self.threads, dtype=np.uint32)
            if len(self.threads) != len(self.visits):
                raise ValueError("threads must have one entry per visit")

    @property
    def arch(self) -> Arch:
        return self.meta.arch

    @cached_property
    def block_insn_counts(self) -> np.ndarray:
        return np.fromiter((b.instruction_count for b in self.blocks), dtype=np.int64, count=len(self.blocks))

    @property
    def instruction_count(self) -> int:
        if len(self.visits) == 0:
            return 0
        return int(self.block_insn_counts[self.visits].sum())

    @property
    def visit_count(self) -> int:
        return len(self.visits)

    def block_instructions(self, block_id: int) -> list[Instruction]:
        """Disassembled instructions of one block (cached per trace)."""
        cache = self.__dict__.setdefault("_insn_cache", {})
        insns = cache.get(block_id)
        if insns is None:
            insns = self.blocks[block_id].instructions(self.arch)
            cache[block_id] = insns
        return insns

    def iter_instructions(self) -> Iterator[tuple[int, Instruction]]:
        """(thread id, instruction) for every executed instruction, in order."""
        threads = self.threads
        for i, block_id in enumerate(self.visits.tolist()):
            tid = 0 if threads is None else int(threads[i])
            for insn in self.block_instructions(block_id):
                yield tid, insn

    def api_calls_by_position(self) -> dict[int, list[ApiCall]]:
        out: dict[int, list[ApiCall]] = {}
        for call in self.api_calls:
            out.setdefault(call.position, []).append(call)
        return out
