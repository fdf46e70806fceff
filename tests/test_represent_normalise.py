"""Instruction normalisation: known instructions in every mode, and one token whatever the syntax."""

from __future__ import annotations

import pytest

from runtrace.represent.normalise import Normalisation, api_token, normalise_instruction, normalise_text
from runtrace.trace.disasm import decode_one

MODES = ("mnemonic", "operand-kinds", "registers")

# (machine code, bits) -> expected token per mode; the text comes from capstone, as in emulated traces.
KNOWN = [
    (b"\x8b\x45\xf8", 32, ("mov", "mov r32,m32", "mov eax,dword [ebp-DISP]")),
    (b"\x8b\x45\x08", 32, ("mov", "mov r32,m32", "mov eax,dword [ebp+DISP]")),
    (b"\x8d\x45\xf8", 32, ("lea", "lea r32,m", "lea eax,[ebp-DISP]")),
    (b"\x6a\x10", 32, ("push", "push imm", "push IMM")),
    (b"\x55", 32, ("push", "push r32", "push ebp")),
    (b"\xe8\x00\x00\x00\x00", 32, ("call", "call rel", "call ADDR")),
    (b"\xff\x15\x00\x20\x40\x00", 32, ("call", "call m32", "call dword [ADDR]")),
    (b"\xff\xd0", 32, ("call", "call r32", "call eax")),
    (b"\x74\x00", 32, ("je", "je rel", "je ADDR")),
    (b"\x64\xa1\x30\x00\x00\x00", 32, ("mov", "mov r32,fs:m32", "mov eax,dword fs:[0x30]")),
    (b"\xf3\xa5", 32, ("rep movsd", "rep movsd", "rep movsd")),
    (b"\xf2\xae", 32, ("repne scasb", "repne scasb", "repne scasb")),
    (b"\xc3", 32, ("ret", "ret", "ret")),
    (b"\xc2\x08\x00", 32, ("ret", "ret imm", "ret IMM")),
    (b"\xc6\x00\x00", 32, ("mov", "mov m8,imm", "mov byte [eax],IMM")),
    (b"\x0f\xb6\x01", 32, ("movzx", "movzx r32,m8", "movzx eax,byte [ecx]")),
    (b"\x8b\x44\x88\x10", 32, ("mov", "mov r32,m32", "mov eax,dword [eax+ecx*4+DISP]")),
    (b"\xf0\x0f\xb1\x0a", 32, ("lock cmpxchg", "lock cmpxchg m32,r32", "lock cmpxchg dword [edx],ecx")),
    (b"\xf2\x0f\x10\xc1", 32, ("movsd", "movsd xmm,xmm", "movsd xmm0,xmm1")),
    (b"\xd9\xc0", 32, ("fld", "fld st", "fld st(0)")),
    (b"\xdb\x38", 32, ("fstp", "fstp m80", "fstp tbyte [eax]")),
    (b"\x48\x8b\x05\x00\x10\x00\x00", 64, ("mov", "mov r64,m64", "mov rax,qword [rip+DISP]")),
    (b"\x65\x48\x8b\x04\x25\x60\x00\x00\x00", 64, ("mov", "mov r64,gs:m64", "mov rax,qword gs:[0x60]")),
    (b"\x45\x89\xc8", 64, ("mov", "mov r32,r32", "mov r8d,r9d")),
]


@pytest.mark.parametrize(("code", "bits", "expected"), KNOWN, ids=[k[2][2] for k in KNOWN])
def test_known_instructions_in_every_mode(code: bytes, bits: int, expected: tuple[str, str, str]) -> None:
    insn = decode_one(code, 0x401000, bits)
    assert insn is not None
    got = tuple(normalise_instruction(insn.mnemonic, insn.op_str, mode) for mode in MODES)
    assert got == expected


# capstone's Intel text vs. the same instruction as debuggers spell it (MASM: x64dbg / OllyDbg).
SAME = [
    ("mov eax, dword ptr [ebp - 8]", "MOV EAX,DWORD PTR SS:[EBP-8]"),
    ("mov eax, dword ptr [ebp + 0xc]", "mov eax,dword ptr ss:[ebp+0Ch]"),
    ("lea eax, [ebp - 8]", "LEA EAX,DWORD PTR SS:[EBP-8]"),
    ("call dword ptr [0x402000]", "CALL DWORD PTR DS:[<&KERNEL32.CreateFileA>]"),
    ("call 0x401005", "CALL <JMP.&KERNEL32.ExitProcess>"),
    ("jne 0x401020", "JNZ SHORT 00401020"),
    ("je 0x401020", "jz short 0x401020"),
    ("ret", "RETN"),
    ("ret 8", "RETN 8"),
    ("rep movsd dword ptr es:[edi], dword ptr [esi]", "REP MOVS DWORD PTR ES:[EDI],DWORD PTR DS:[ESI]"),
    ("rep stosd dword ptr es:[edi], eax", "rep stosd"),
    ("repne scasb al, byte ptr es:[edi]", "REPNZ SCAS BYTE PTR ES:[EDI]"),
    ("mov eax, dword ptr fs:[0x30]", "MOV EAX,DWORD PTR FS:[30]"),
    ("mov eax, dword ptr [eax + ecx*4 + 0x10]", "MOV EAX,DWORD PTR DS:[EAX+ECX*4+10]"),
    ("fld st(0)", "FLD ST"),
    ("push 0x10", "PUSH 10"),
    ("push 0x10", "push offset 10h"),
    ("int3", "INT3"),
    ("sete al", "SETZ AL"),
    ("cmovne eax, ecx", "CMOVNZ EAX,ECX"),
    ("shl eax, 2", "SAL EAX,2"),
]


@pytest.mark.parametrize(("capstone", "masm"), SAME)
@pytest.mark.parametrize("mode", MODES)
def test_capstone_and_masm_spellings_give_the_same_token(capstone: str, masm: str, mode: str) -> None:
    assert normalise_text(capstone, mode) == normalise_text(masm, mode)


def test_mnemonic_and_operands_may_arrive_split_anywhere() -> None:
    # Text importers split "rep movsd ..." at the first space; capstone keeps "rep movsd" together.
    assert (
        normalise_instruction("rep", "movsd dword ptr es:[edi], dword ptr [esi]", "registers") == "rep movsd"
    )
    assert (
        normalise_instruction("rep movsd", "dword ptr es:[edi], dword ptr [esi]", "registers") == "rep movsd"
    )


def test_modes_accept_enum_and_string() -> None:
    assert normalise_text("xor eax, eax", Normalisation.REGISTERS) == normalise_text(
        "xor eax, eax", "registers"
    )
    with pytest.raises(ValueError):
        normalise_text("nop", "bogus")


def test_api_token_is_case_insensitive() -> None:
    assert api_token("kernel32.CreateFileA") == "api:kernel32.createfilea"
    assert api_token("KERNEL32.createfileA") == api_token("kernel32.CreateFileA")
