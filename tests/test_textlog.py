"""Text run traces: MASM/x64dbg syntax normalisation, x64dbg and OllyDbg logs, custom patterns."""

from __future__ import annotations

import pytest

from runtrace.trace.asmsyntax import normalise_syntax
from runtrace.trace.disasm import disassembler
from runtrace.trace.errors import TraceReadError
from runtrace.trace.formats.textlog import (
    read_custom_log,
    read_ollydbg_log,
    read_text_log,
    read_x64dbg_log,
    sniff_text_format,
    write_text_log,
)
from runtrace.trace.model import Arch
from trace_samples import X64_BASE, X64_CODE, X86_BASE, X86_CODE, sample_trace

# (bits, machine code, OllyDbg MASM spelling, x64dbg spelling): all three must normalise to capstone.
SPELLINGS = [
    (32, "55", "PUSH EBP", "push ebp"),
    (32, "8bec", "MOV EBP,ESP", "mov ebp,esp"),
    (32, "8b4508", "MOV EAX,DWORD PTR SS:[EBP+8]", "mov eax,dword ptr ss:[ebp+8]"),
    (32, "8b4508", "MOV EAX,DWORD PTR SS:[EBP+8h]", "mov eax, dword ptr ss:[ebp + 0x8]"),
    (32, "8b45f8", "MOV EAX,DWORD PTR SS:[EBP-8]", "mov eax,dword ptr ss:[ebp-8]"),
    (32, "8b45f0", "MOV EAX,DWORD PTR SS:[EBP-10]", "mov eax,dword ptr ss:[ebp-10]"),
    (32, "8b45f4", "MOV EAX,DWORD PTR SS:[EBP-0Ch]", "mov eax,dword ptr ss:[ebp-C]"),
    (32, "8d4508", "LEA EAX,DWORD PTR SS:[EBP+8]", "lea eax,dword ptr ss:[ebp+8]"),
    (32, "8d4c9110", "LEA ECX,DWORD PTR DS:[ECX+EDX*4+10]", "lea ecx,dword ptr ds:[ecx+edx*4+10]"),
    (32, "8b0485000d4000", "MOV EAX,DWORD PTR DS:[EAX*4+400D00]", "mov eax,dword ptr ds:[eax*4+400D00]"),
    (32, "8b8424f0feffff", "MOV EAX,DWORD PTR SS:[ESP-110]", "mov eax,dword ptr ss:[esp-110]"),
    (32, "8b04cd00000000", "MOV EAX,DWORD PTR DS:[ECX*8]", "mov eax,dword ptr ds:[ecx*8]"),
    (32, "64a100000000", "MOV EAX,DWORD PTR FS:[0]", "mov eax,dword ptr fs:[0]"),
    (32, "64a118000000", "MOV EAX,DWORD PTR FS:[18]", "mov eax,dword ptr fs:[00000018]"),
    (32, "ff1500204000", "CALL DWORD PTR DS:[402000]", "call dword ptr ds:[402000]"),
    (32, "e8fbffffff", "CALL 00401000", "call 0x401000"),
    (32, "e8fbffffff", "CALL rtrace.00401000", "call rtrace.00401000"),
    (32, "ebfe", "JMP SHORT 00401000", "jmp 0x401000"),
    (32, "ff2485000d4000", "JMP DWORD PTR DS:[EAX*4+400D00]", "jmp dword ptr ds:[eax*4+400D00]"),
    (32, "7405", "JE SHORT 00401007", "je 0x401007"),
    (32, "7405", "JZ SHORT 00401007", "jz 0x401007"),
    (32, "7505", "JNZ SHORT 00401007", "jne 0x401007"),
    (32, "7305", "JNB SHORT 00401007", "jae 0x401007"),
    (32, "3d00010000", "CMP EAX,100", "cmp eax,100"),
    (32, "83f8ff", "CMP EAX,-1", "cmp eax,FFFFFFFF"),
    (32, "837dfcff", "CMP DWORD PTR SS:[EBP-4],-1", "cmp dword ptr ss:[ebp-4],FFFFFFFF"),
    (32, "85c0", "TEST EAX,EAX", "test eax,eax"),
    (32, "a900000080", "TEST EAX,80000000", "test eax,80000000"),
    (32, "83c4f8", "ADD ESP,-8", "add esp,FFFFFFF8"),
    (32, "83e4f0", "AND ESP,FFFFFFF0", "and esp,FFFFFFF0"),
    (32, "83e4f0", "AND ESP,-10", "and esp,FFFFFFF0"),
    (32, "6aff", "PUSH -1", "push FFFFFFFF"),
    (32, "6a08", "PUSH 8", "push 8"),
    (32, "6a08", "PUSH 0008", "push 8h"),
    (32, "6800104000", "PUSH 00401000", "push 401000"),
    (32, "6800104000", "PUSH 401000h", "push 0x401000"),
    (32, "b8ffffffff", "MOV EAX,-1", "mov eax,FFFFFFFF"),
    (32, "c745fc10000000", "MOV DWORD PTR SS:[EBP-4],10", "mov dword ptr ss:[ebp-4],10"),
    (32, "c600ff", "MOV BYTE PTR DS:[EAX],0FF", "mov byte ptr ds:[eax],FF"),
    (32, "66890d00204000", "MOV WORD PTR DS:[402000],CX", "mov word ptr ds:[402000],cx"),
    (32, "a4", "MOVS BYTE PTR ES:[EDI],BYTE PTR DS:[ESI]", "movsb"),
    (
        32,
        "f3a5",
        "REP MOVS DWORD PTR ES:[EDI],DWORD PTR DS:[ESI]",
        "rep movsd dword ptr es:[edi],dword ptr ds:[esi]",
    ),
    (32, "ab", "STOS DWORD PTR ES:[EDI]", "stosd"),
    (32, "ad", "LODS DWORD PTR DS:[ESI]", "lodsd"),
    (32, "f2ae", "REPNE SCAS BYTE PTR ES:[EDI]", "repne scasb"),
    (32, "f3a6", "REPE CMPS BYTE PTR DS:[ESI],BYTE PTR ES:[EDI]", "repe cmpsb"),
    (32, "60", "PUSHAD", "pushad"),
    (32, "c3", "RETN", "ret"),
    (32, "c20800", "RETN 8", "ret 8"),
    (32, "f00fc101", "LOCK XADD DWORD PTR DS:[ECX],EAX", "lock xadd dword ptr ds:[ecx],eax"),
    (32, "0fb601", "MOVZX EAX,BYTE PTR DS:[ECX]", "movzx eax,byte ptr ds:[ecx]"),
    (32, "dd442408", "FLD QWORD PTR SS:[ESP+8]", "fld qword ptr ss:[esp+8]"),
    (32, "db6c2408", "FLD TBYTE PTR SS:[ESP+8]", "fld tword ptr ss:[esp+8]"),
    (32, "d9c9", "FXCH ST(1)", "fxch st1"),
    (32, "0f94c0", "SETE AL", "sete al"),
    (32, "0f44c1", "CMOVZ EAX,ECX", "cmove eax,ecx"),
    (32, "6bc0f0", "IMUL EAX,EAX,-10", "imul eax,eax,FFFFFFF0"),
    (32, "cd80", "INT 80", "int 80"),
    (32, "cc", "INT3", "int3"),
    (32, "f20f104508", "MOVSD XMM0,QWORD PTR SS:[EBP+8]", "movsd xmm0,qword ptr ss:[ebp+8]"),
    (64, "4883ec28", "SUB RSP,28", "sub rsp,28"),
    (64, "488b442408", "MOV RAX,QWORD PTR SS:[RSP+8]", "mov rax,qword ptr ss:[rsp+8]"),
    (64, "4c8b4424f8", "MOV R8,QWORD PTR SS:[RSP-8]", "mov r8,qword ptr ss:[rsp-8]"),
    (64, "65488b042530000000", "MOV RAX,QWORD PTR GS:[30]", "mov rax,qword ptr gs:[30]"),
    (64, "4d8b04c8", "MOV R8,QWORD PTR DS:[R8+RCX*8]", "mov r8,qword ptr ds:[r8+rcx*8]"),
    (64, "4a8b04e1", "MOV RAX,QWORD PTR DS:[RCX+R12*8]", "mov rax,qword ptr ds:[rcx+r12*8]"),
    (64, "488b84c8f0ffffff", "MOV RAX,QWORD PTR DS:[RAX+RCX*8-10]", "mov rax,qword ptr ds:[rax+rcx*8-10]"),
    (64, "41ffd0", "CALL R8", "call r8"),
    (64, "48b8efcdab8967452301", "MOV RAX,123456789ABCDEF", "mov rax,123456789ABCDEF"),
    (64, "4883e4f0", "AND RSP,FFFFFFFFFFFFFFF0", "and rsp,FFFFFFFFFFFFFFF0"),
    (64, "4883c0ff", "ADD RAX,-1", "add rax,FFFFFFFFFFFFFFFF"),
    (64, "4881c4f8ffffff", "ADD RSP,-8", "add rsp,FFFFFFFFFFFFFFF8"),
    (64, "48a5", "MOVS QWORD PTR ES:[RDI],QWORD PTR DS:[RSI]", "movsq"),
    (64, "f348ab", "REP STOS QWORD PTR ES:[RDI]", "rep stosq"),
    (64, "0f05", "SYSCALL", "syscall"),
    (64, "48ffc0", "INC RAX", "inc rax"),
]


def _capstone_text(bits: int, hex_bytes: str, address: int = 0x401000) -> str:
    _, _, mnemonic, op_str = next(disassembler(bits).disasm_lite(bytes.fromhex(hex_bytes), address, 1))
    return f"{mnemonic} {op_str}".strip()


@pytest.mark.parametrize(("bits", "code", "masm", "x64dbg"), SPELLINGS)
def test_masm_and_x64dbg_spellings_normalise_to_capstone(bits, code, masm, x64dbg):
    reference = _capstone_text(bits, code)
    assert normalise_syntax(masm, bits) == reference
    assert normalise_syntax(x64dbg, bits) == reference
    assert normalise_syntax(reference, bits) == reference  # capstone's own text is left alone


def test_capstone_text_is_a_fixed_point():
    for bits, base, code in ((32, X86_BASE, X86_CODE), (64, X64_BASE, X64_CODE)):
        for offset, hex_bytes in code.items():
            text = _capstone_text(bits, hex_bytes, base + offset)
            assert normalise_syntax(text, bits) == text


def test_whitespace_and_case_do_not_matter():
    assert (
        normalise_syntax("  MOV\tEAX ,  DWORD   PTR  SS:[ EBP + 8 ] ", 32) == "mov eax, dword ptr [ebp + 8]"
    )


# --- x64dbg trace logs ------------------------------------------------------------------------------


def _write(tmp_path, text: str, name: str = "log.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def test_x64dbg_log_variants(tmp_path):
    log = (
        "Trace started\n"
        "00401000 push ebp\n"
        "0x00401001\tmov ebp, esp\r\n"
        "demo.00401003   SUB ESP,0C\n"
        "0x401006 mov eax,dword ptr ss:[ebp+8]\n"
        "\n"
        "this line is not an instruction\n"
        "00401009 ret\n"
        "Trace finished after 5 steps!\n"
    )
    trace = read_x64dbg_log(_write(tmp_path, log))
    assert trace.meta.source == "x64dbg-text" and trace.arch is Arch.X86
    got = [(i.address, i.text) for _, i in trace.iter_instructions()]
    assert got == [
        (0x401000, "push ebp"),
        (0x401001, "mov ebp, esp"),
        (0x401003, "sub esp, 0xc"),
        (0x401006, "mov eax, dword ptr [ebp + 8]"),
        (0x401009, "ret"),
    ]
    assert trace.blocks[0].insn_lengths == (1, 2, 3, 3, 0)  # ret is the last line: its length is unknown
    assert trace.blocks[0].data == b"" and trace.blocks[0].texts[0] == "push ebp"


def test_x64dbg_log_64_bit_from_address_width(tmp_path):
    log = "00007FF6A1B21000 sub rsp, 0x28\n00007ff6a1b21004 call 0x7ff6a1b21010\n00007FF6A1B21010 ret\n"
    trace = read_x64dbg_log(_write(tmp_path, log))
    assert trace.arch is Arch.AMD64
    assert [i.address for _, i in trace.iter_instructions()] == [
        0x7FF6A1B21000,
        0x7FF6A1B21004,
        0x7FF6A1B21010,
    ]


# --- OllyDbg run-trace logs ---------------------------------------------------------------------------

OLLY_1 = """\
00401000  Main     PUSH EBP                                   ESP=0012FFC0
00401001  Main     MOV EBP,ESP                                EBP=0012FFC0
00401003  Main     MOV EAX,DWORD PTR SS:[EBP+8]               EAX=00000001
00401006  Main     CMP EAX,-1
00401009  Main     JNZ SHORT 00401010
00402000  00000F2C PUSH 0                                     ESP=0051FF80
0040100B  Main     RETN
00402002  00000F2C CALL rtrace.00401000                       ESP=0051FF7C
"""

OLLY_2 = """\
Thread    Module    Address   Command                                  Modified registers
main      rtrace    00401000  PUSH EBP                                 ESP=0012FF88
main      rtrace    00401001  MOV EBP,ESP                              EBP=0012FF88
main      rtrace    00401003  MOV EAX,DWORD PTR FS:[0]                 EAX=0012FFC4
00000A10            00950000  XOR EAX,EAX                              EAX=00000000
main      rtrace    00401009  LEA ECX,DWORD PTR DS:[EAX+EAX*2+4]       ECX=00000004
"""


def test_ollydbg_1_layout_with_thread_column_and_registers(tmp_path):
    trace = read_ollydbg_log(_write(tmp_path, OLLY_1))
    assert trace.meta.source == "ollydbg" and trace.arch is Arch.X86
    got = [(tid, i.address, i.text) for tid, i in trace.iter_instructions()]
    assert got == [
        (0, 0x401000, "push ebp"),
        (0, 0x401001, "mov ebp, esp"),
        (0, 0x401003, "mov eax, dword ptr [ebp + 8]"),
        (0, 0x401006, "cmp eax, -1"),
        (0, 0x401009, "jne 0x401010"),
        (0xF2C, 0x402000, "push 0"),
        (0, 0x40100B, "ret"),
        (0xF2C, 0x402002, "call 0x401000"),
    ]
    # jne 0x401010 was not taken (its thread went on at 0x40100B): its length is known.
    jne = next(b for b in trace.blocks if b.texts[-1].startswith("jne"))
    assert jne.insn_lengths == (1, 2, 3, 3, 2)


def test_ollydbg_2_layout_with_header_and_module_column(tmp_path):
    trace = read_ollydbg_log(_write(tmp_path, OLLY_2))
    got = [(tid, i.address, i.text) for tid, i in trace.iter_instructions()]
    assert got == [
        (0, 0x401000, "push ebp"),
        (0, 0x401001, "mov ebp, esp"),
        (0, 0x401003, "mov eax, dword ptr fs:[0]"),
        (0xA10, 0x950000, "xor eax, eax"),  # no module: the column is blank
        (0, 0x401009, "lea ecx, [eax + eax*2 + 4]"),
    ]


def test_ollydbg_thread_first_layout_without_header(tmp_path):
    log = "00000F2C  00402000  PUSH 0\nMain      00401000  PUSH EBP\nMain  rtrace  00401001  MOV EBP,ESP\n"
    path = _write(tmp_path, log)
    assert sniff_text_format(path) == "ollydbg"
    trace = read_ollydbg_log(path)
    assert [(t, i.address, i.text) for t, i in trace.iter_instructions()] == [
        (0xF2C, 0x402000, "push 0"),
        (0, 0x401000, "push ebp"),
        (0, 0x401001, "mov ebp, esp"),
    ]


def test_sniffing_tells_the_logs_apart(tmp_path):
    assert sniff_text_format(_write(tmp_path, OLLY_1, "a.txt")) == "ollydbg"
    assert sniff_text_format(_write(tmp_path, OLLY_2, "b.txt")) == "ollydbg"
    assert sniff_text_format(_write(tmp_path, "00401000 push ebp\n00401001 ret\n", "c.txt")) == "x64dbg-text"
    assert (
        sniff_text_format(_write(tmp_path, "00401000 ADD EAX, 1\n00401003 RET\n", "d.txt")) == "x64dbg-text"
    )
    assert sniff_text_format(_write(tmp_path, "hello\nworld\n", "e.txt")) is None
    assert read_text_log(tmp_path / "a.txt").meta.source == "ollydbg"


# --- custom line patterns ---------------------------------------------------------------------------


def test_custom_pattern_with_thread_group(tmp_path):
    log = "[t=1a] 0x401000 | push ebp\n[t=2b] 0x402000 | nop\n# comment\n[t=1a] 0x401001 | ret\n"
    pattern = r"\[t=(?P<thread>\w+)\] (?P<address>0x[0-9a-f]+) \| (?P<instruction>.+)"
    trace = read_custom_log(_write(tmp_path, log), pattern)
    assert trace.meta.source == "text" and trace.meta.settings["line_pattern"] == pattern
    got = [(tid, i.address, i.text) for tid, i in trace.iter_instructions()]
    assert got == [(0x1A, 0x401000, "push ebp"), (0x2B, 0x402000, "nop"), (0x1A, 0x401001, "ret")]
    # push ebp's length comes from its own thread's next instruction, across the other thread's line.
    assert [(b.address, b.insn_lengths) for b in trace.blocks] == [
        (0x401000, (1,)),
        (0x402000, (0,)),
        (0x401001, (0,)),
    ]


def test_custom_pattern_errors(tmp_path):
    path = _write(tmp_path, "zz push ebp\n00401000 ret\n")
    with pytest.raises(TraceReadError, match="not a valid regular expression"):
        read_custom_log(path, r"(?P<address>[0-9a-f+")
    with pytest.raises(TraceReadError, match="no named group"):
        read_custom_log(path, r"(?P<address>\w+) (?P<insn>.+)")
    with pytest.raises(TraceReadError) as info:
        read_custom_log(path, r"(?P<address>\w+) (?P<instruction>.+)")
    assert str(info.value) == f"{path}: line 1: address 'zz' is not a hexadecimal number of at most 16 digits"
    path = _write(tmp_path, "00401000 push ebp\nzz nop\n00401001 ret\n", "cut.txt")
    trace = read_custom_log(path, r"(?P<address>\w+) (?P<instruction>.+)", allow_truncated=True)
    assert trace.instruction_count == 1 and trace.meta.events[0]["line"] == 2


# --- round trips through the x64dbg-style writer ------------------------------------------------------


@pytest.mark.parametrize("arch", [Arch.X86, Arch.AMD64])
@pytest.mark.parametrize("threads", [(0,), (0x111, 0x222)])
def test_text_round_trip(tmp_path, arch, threads):
    trace = sample_trace(arch, runs=6, threads=threads)
    back = read_x64dbg_log(write_text_log(trace, tmp_path / "out.txt"))
    assert back.arch is arch
    original = [(tid, i.address, i.text) for tid, i in trace.iter_instructions()]
    assert [(tid, i.address, i.text) for tid, i in back.iter_instructions()] == original
    # Same block structure: every visit starts at the same address with the same instructions.
    shape = [(trace.blocks[v].address, trace.blocks[v].instruction_count) for v in trace.visits.tolist()]
    assert [(back.blocks[v].address, back.blocks[v].instruction_count) for v in back.visits.tolist()] == shape
    assert (back.threads is None) == (trace.threads is None)
    if trace.threads is not None:
        assert back.threads.tolist() == trace.threads.tolist()
    # Lengths inside blocks are exact; the last instruction's where the log shows it (else 0).
    for b in back.blocks:
        real = next(
            x for x in trace.blocks if x.address == b.address and x.instruction_count == b.instruction_count
        )
        assert b.insn_lengths[:-1] == real.insn_lengths[:-1]
        assert b.insn_lengths[-1] in (0, real.insn_lengths[-1])


def test_text_trace_written_again_is_the_same_file(tmp_path):
    trace = sample_trace(Arch.X86, runs=3, threads=(1, 2))
    first = write_text_log(trace, tmp_path / "a.txt")
    second = write_text_log(read_x64dbg_log(first), tmp_path / "b.txt")
    assert first.read_text() == second.read_text()


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("reader", [read_x64dbg_log, read_ollydbg_log])
def test_file_with_no_instruction_lines(tmp_path, reader):
    path = _write(tmp_path, "Trace started\nnothing here\n\n")
    with pytest.raises(TraceReadError) as info:
        reader(path)
    message = str(info.value)
    assert (
        message.startswith(f"{path}: line 3: no instruction lines found in 3 lines") and "\n" not in message
    )


def test_empty_and_binary_files(tmp_path):
    with pytest.raises(TraceReadError, match="line 1: no instruction lines"):
        read_x64dbg_log(_write(tmp_path, ""))
    path = tmp_path / "bin.log"
    path.write_bytes(bytes(range(11, 256)) * 1000)  # no newline in 245 KB: read in bounded pieces
    with pytest.raises(TraceReadError, match="no instruction lines"):
        read_x64dbg_log(path)


def test_prefixed_branch_ends_a_block_like_capstone_says(tmp_path):
    # `bnd jne` (f2 75 ..) not taken: a control transfer whatever its prefix, so the block ends there.
    assert _capstone_text(32, "f2754d") == "bnd jne 0x401050"
    log = "00401000 nop\n00401001 bnd jne 0x401050\n00401003 ret\n"
    trace = read_x64dbg_log(_write(tmp_path, log))
    assert [(b.address, b.texts, b.insn_lengths) for b in trace.blocks] == [
        (0x401000, ("nop", "bnd jne 0x401050"), (1, 2)),
        (0x401003, ("ret",), (0,)),
    ]
