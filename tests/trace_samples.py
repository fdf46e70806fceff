"""Hand-made run traces and x64dbg bytes for the trace-format tests.

The programs are a few lines of real x86 / x64 machine code (assembled by hand, checked with
capstone in the tests), "executed" by listing the addresses control reaches.  The x64dbg helpers
encode and decode blocks straight from shared/docs/trace-formats.md, independently of the reader
and writer under test.
"""

from __future__ import annotations

import json
import struct

from runtrace.trace.blocks import BlockBuilder
from runtrace.trace.model import Arch, Trace, TraceMeta

# --- x86 sample: a loop calling a subroutine with `rep movsb`, `fs:` and a conditional skip ---------
X86_BASE = 0x401000
X86_CODE = {
    0x00: "55",  # push ebp
    0x01: "89e5",  # mov ebp, esp
    0x03: "31c9",  # xor ecx, ecx
    0x05: "8b4508",  # mov eax, dword ptr [ebp + 8]        (loop)
    0x08: "8d0488",  # lea eax, [eax + ecx*4]
    0x0B: "e810000000",  # call 0x401020
    0x10: "41",  # inc ecx
    0x11: "83f903",  # cmp ecx, 3
    0x14: "75ef",  # jne 0x401005
    0x16: "5d",  # pop ebp
    0x17: "c3",  # ret
    0x20: "64a118000000",  # mov eax, dword ptr fs:[0x18]      (subroutine)
    0x26: "f3a4",  # rep movsb byte ptr es:[edi], byte ptr [esi]
    0x28: "7402",  # je 0x40102c
    0x2A: "90",  # nop
    0x2B: "90",  # nop
    0x2C: "c3",  # ret
}


def x86_path(skip_first: bool = True) -> list[int]:
    path = [0x00, 0x01, 0x03]
    for i in range(3):
        path += [0x05, 0x08, 0x0B, 0x20, 0x26, 0x26, 0x28]  # rep movsb runs twice at one address
        path += [0x2C] if (i % 2 == 0) == skip_first else [0x2A, 0x2B, 0x2C]
        path += [0x10, 0x11, 0x14]
    path += [0x16, 0x17]
    return [X86_BASE + off for off in path]


# --- x64 sample: RIP-relative lea, gs:, SIB with r8, a call and a conditional jump ----------------
X64_BASE = 0x140001000
X64_CODE = {
    0x00: "4883ec28",  # sub rsp, 0x28
    0x04: "488d0df50f0000",  # lea rcx, [rip + 0xff5]
    0x0B: "65488b042530000000",  # mov rax, qword ptr gs:[0x30]
    0x14: "4c8b442408",  # mov r8, qword ptr [rsp + 8]
    0x19: "4a8b04c1",  # mov rax, qword ptr [rcx + r8*8]
    0x1D: "4885c0",  # test rax, rax
    0x20: "7405",  # je 0x140001027
    0x22: "e809000000",  # call 0x140001030
    0x27: "4883c428",  # add rsp, 0x28
    0x2B: "c3",  # ret
    0x30: "48ffc0",  # inc rax
    0x33: "c3",  # ret
}


def x64_path(call: bool = True) -> list[int]:
    path = [0x00, 0x04, 0x0B, 0x14, 0x19, 0x1D, 0x20]
    path += [0x22, 0x30, 0x33, 0x27, 0x2B] if call else [0x27, 0x2B]
    return [X64_BASE + off for off in path]


def code_bytes(arch: Arch, address: int) -> bytes:
    base, code = (X86_BASE, X86_CODE) if arch is Arch.X86 else (X64_BASE, X64_CODE)
    return bytes.fromhex(code[address - base])


def stream(arch: Arch, runs: int = 4, threads: tuple[int, ...] = (0,)) -> list[tuple[int, int, bytes]]:
    """(thread id, address, bytes) of every executed instruction.

    With several threads, each runs the program `runs` times and their instructions are interleaved
    in slices of varying length, as a debugger sees threads being switched.
    """
    per_thread = []
    for t, tid in enumerate(threads):
        path: list[int] = []
        for r in range(runs):
            path += x86_path((r + t) % 2 == 0) if arch is Arch.X86 else x64_path((r + t) % 2 == 0)
        per_thread.append([(tid, a, code_bytes(arch, a)) for a in path])
    out, slice_len, turn = [], 3, 0
    while any(per_thread):
        queue = per_thread[turn % len(per_thread)]
        out += queue[:slice_len]
        del queue[:slice_len]
        turn += 1
        slice_len = slice_len % 11 + 2
    return out


def sample_trace(arch: Arch, runs: int = 4, threads: tuple[int, ...] = (0,)) -> Trace:
    """A Trace built the canonical way (BlockBuilder.add, one instruction at a time)."""
    builder = BlockBuilder(arch.bits)
    for tid, address, data in stream(arch, runs, threads):
        builder.add(address, data, tid)
    blocks, visits, thread_ids = builder.finish()
    meta = TraceMeta(sha256="ab" * 32, arch=arch, source="test", file_name="sample.exe")
    return Trace(meta=meta, blocks=blocks, visits=visits, threads=thread_ids)


def instructions(trace: Trace) -> list[tuple[int, int, bytes]]:
    return [(tid, insn.address, insn.data) for tid, insn in trace.iter_instructions()]


# --- x64dbg bytes, straight from the format description ---------------------------------------------
PTR = {Arch.X86: 4, Arch.AMD64: 8}
IP_SLOT = {Arch.X86: 8, Arch.AMD64: 16}
DUMP_SLOTS = {Arch.X86: 216, Arch.AMD64: 172}


def header(arch: Arch | str, **extra) -> bytes:
    name = {Arch.X86: "x86", Arch.AMD64: "x64"}.get(arch, arch)
    body = json.dumps({"ver": 1, "arch": name, **extra}).encode()
    return b"TRAC" + struct.pack("<I", len(body)) + body


def block(
    arch: Arch,
    opcode: bytes,
    regs: list[tuple[int, int]] = (),
    mem: list[tuple[int, int, int, int | None]] = (),
    tid: int | None = None,
) -> bytes:
    """One type-0 block.  regs: (absolute slot, value) in increasing slot order;
    mem: (flags, address, old, new) with new None when flags bit 0 is set."""
    fmt = "<Q" if PTR[arch] == 8 else "<I"
    out = bytes([0, len(regs), len(mem), len(opcode) | (0x80 if tid is not None else 0)])
    if tid is not None:
        out += struct.pack("<I", tid)
    out += opcode
    previous = -1
    for slot, _ in regs:
        out += bytes([slot - previous - 1])
        previous = slot
    out += b"".join(struct.pack(fmt, v) for _, v in regs)
    out += bytes(f for f, *_ in mem)
    out += b"".join(struct.pack(fmt, a) for _, a, _, _ in mem)
    out += b"".join(struct.pack(fmt, o) for _, _, o, _ in mem)
    out += b"".join(struct.pack(fmt, n) for f, _, _, n in mem if not f & 1)
    return out


def full_dump(arch: Arch, ip: int, **slots: int) -> list[tuple[int, int]]:
    values = [0] * DUMP_SLOTS[arch]
    values[IP_SLOT[arch]] = ip
    for slot, value in slots.items():
        values[int(slot.lstrip("s"))] = value
    return list(enumerate(values))


def decode_blocks(data: bytes) -> tuple[dict, list[dict]]:
    """A plain reference parser: the JSON and every block as a dict (for checking the writer)."""
    assert data[:4] == b"TRAC"
    (n,) = struct.unpack_from("<I", data, 4)
    info = json.loads(data[8 : 8 + n])
    ptr = 8 if info["arch"] == "x64" else 4
    fmt = "<Q" if ptr == 8 else "<I"
    pos, out = 8 + n, []
    while pos < len(data):
        start = pos
        kind, r, m, flags = data[pos : pos + 4]
        pos += 4
        tid = None
        if flags & 0x80:
            (tid,) = struct.unpack_from("<I", data, pos)
            pos += 4
        opcode = data[pos : pos + (flags & 15)]
        pos += flags & 15
        rel = list(data[pos : pos + r])
        pos += r
        values = [struct.unpack_from(fmt, data, pos + i * ptr)[0] for i in range(r)]
        pos += r * ptr
        mem_flags = list(data[pos : pos + m])
        pos += m + 2 * m * ptr + sum(1 for f in mem_flags if not f & 1) * ptr
        slots, previous = [], -1
        for step in rel:
            previous += step + 1
            slots.append(previous)
        regs = dict(zip(slots, values, strict=True))
        out.append({"offset": start, "type": kind, "tid": tid, "opcode": opcode, "regs": regs})
    assert pos == len(data)
    return info, out
