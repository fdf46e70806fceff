"""Instruction normalisation: one executed instruction becomes one token string.

Three levels of abstraction, chosen per dataset:

| mode            | `mov eax, dword ptr [ebp - 8]` | `call 0x401005` | `push 0x10` |
| --------------- | ------------------------------ | --------------- | ----------- |
| `mnemonic`      | `mov`                          | `call`          | `push`      |
| `operand-kinds` | `mov r32,m32`                  | `call rel`      | `push imm`  |
| `registers`     | `mov eax,dword [ebp-DISP]`     | `call ADDR`     | `push IMM`  |

Everything works from the disassembly *text*, never from decoder internals, so capstone's Intel syntax
(the emulator) and MASM spellings from debugger logs (x64dbg, OllyDbg: upper case, `SS:` prefixes, `RETN`,
`JNZ SHORT`, `0Ch` / bare-hex numbers, `MOVS DWORD PTR ES:[EDI],...`) give the same tokens.  Addresses,
displacements and immediates are abstracted because they differ between builds and load addresses and
would let a model memorise files instead of learning behaviour.  Two things are kept literal on purpose:
the sign of a displacement (locals `[ebp-DISP]` vs arguments `[ebp+DISP]`) and absolute `fs:`/`gs:`
offsets, which name fixed TEB fields (`fs:[0x30]` is the PEB, `fs:[0]` the SEH chain) — classic
anti-analysis and unpacking idioms.
"""

from __future__ import annotations

import enum
import re
from functools import lru_cache


class Normalisation(enum.StrEnum):
    MNEMONIC = "mnemonic"
    OPERAND_KINDS = "operand-kinds"
    REGISTERS = "registers"


# --- register classes --------------------------------------------------------------------------------

_GPR8 = ["al", "cl", "dl", "bl", "ah", "ch", "dh", "bh", "spl", "bpl", "sil", "dil"] + [
    f"r{i}b" for i in range(8, 16)
]
_GPR16 = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di", "ip"] + [f"r{i}w" for i in range(8, 16)]
_GPR32 = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip"] + [f"r{i}d" for i in range(8, 16)]
_GPR64 = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "rip"] + [f"r{i}" for i in range(8, 16)]
_SEGMENTS = frozenset(["cs", "ds", "es", "fs", "gs", "ss"])

REGISTER_KIND: dict[str, str] = {}
for _names, _kind in ((_GPR8, "r8"), (_GPR16, "r16"), (_GPR32, "r32"), (_GPR64, "r64")):
    REGISTER_KIND.update(dict.fromkeys(_names, _kind))
REGISTER_KIND.update(dict.fromkeys(_SEGMENTS, "sreg"))
REGISTER_KIND.update({f"st({i})": "st" for i in range(8)})
REGISTER_KIND.update({f"mm{i}": "mm" for i in range(8)})
REGISTER_KIND.update({f"xmm{i}": "xmm" for i in range(32)})
REGISTER_KIND.update({f"ymm{i}": "ymm" for i in range(32)})
REGISTER_KIND.update({f"zmm{i}": "zmm" for i in range(32)})
REGISTER_KIND.update({f"k{i}": "k" for i in range(8)})
REGISTER_KIND.update({f"cr{i}": "cr" for i in range(16)})
REGISTER_KIND.update({f"dr{i}": "dr" for i in range(16)})
REGISTER_KIND.update({f"bnd{i}": "bnd" for i in range(4)})

# MASM / debugger spellings of x87 registers -> capstone's.
_REGISTER_ALIASES = {"st": "st(0)", **{f"st{i}": f"st({i})" for i in range(8)}}

# Memory operand sizes, by every spelling seen in capstone, MASM, NASM and debuggers.
_MEMORY_SIZE = {
    "byte": "8",
    "word": "16",
    "dword": "32",
    "fword": "48",
    "qword": "64",
    "tbyte": "80",
    "tword": "80",
    "xword": "80",
    "oword": "128",
    "xmmword": "128",
    "ymmword": "256",
    "zmmword": "512",
}
# Canonical size keyword per size, for the `registers` mode.
_SIZE_NAME = {
    "8": "byte",
    "16": "word",
    "32": "dword",
    "48": "fword",
    "64": "qword",
    "80": "tbyte",
    "128": "xmmword",
    "256": "ymmword",
    "512": "zmmword",
}

# --- mnemonics ---------------------------------------------------------------------------------------

_PREFIXES = {
    "rep": "rep",
    "repe": "repe",
    "repz": "repe",
    "repne": "repne",
    "repnz": "repne",
    "lock": "lock",
    "bnd": "bnd",
    "notrack": "notrack",
    "xacquire": "xacquire",
    "xrelease": "xrelease",
}

# Condition-code synonyms -> the spelling capstone prints, for jcc / setcc / cmovcc.
_CONDITIONS = {
    "z": "e",
    "nz": "ne",
    "c": "b",
    "nae": "b",
    "nc": "ae",
    "nb": "ae",
    "na": "be",
    "nbe": "a",
    "nge": "l",
    "nl": "ge",
    "ng": "le",
    "nle": "g",
    "pe": "p",
    "po": "np",
}
_MNEMONIC_ALIASES = {"retn": "ret", "sal": "shl", "xlatb": "xlat", "int 3": "int3"}
_STRING_OPS = frozenset(["movs", "stos", "lods", "scas", "cmps", "ins", "outs"])
_SIZE_SUFFIX = {"8": "b", "16": "w", "32": "d", "64": "q"}
_BRANCHES = frozenset(["call", "jmp", "loop", "loope", "loopne", "jecxz", "jcxz", "jrcxz"])
# Keywords that carry no meaning for a model: jump distance hints, MASM `offset`.
_NOISE_WORDS = frozenset(["short", "near", "offset"])

_SPACES = re.compile(r"\s+")
_SEGMENT_PREFIX = re.compile(r"^([a-z]s):")
_HEX = re.compile(r"^(?:0x[0-9a-f]+|[0-9][0-9a-f]*h?|[0-9a-f]+)$")


def _canonical_mnemonic(mnemonic: str) -> str:
    mnemonic = _MNEMONIC_ALIASES.get(mnemonic, mnemonic)
    for stem in ("j", "set", "cmov"):
        if mnemonic.startswith(stem):
            cond = _CONDITIONS.get(mnemonic[len(stem) :])
            if cond is not None:
                return stem + cond
    return mnemonic


def _parse_hex(text: str) -> int | None:
    """A number as debuggers and capstone print it.  Bare digits are read as hex: x64dbg and OllyDbg
    print hex without a prefix, and capstone prints only 0..9 without one, where both bases agree."""
    text = text.removeprefix("+")
    negative = text.startswith("-")
    text = text.removeprefix("-")
    if not _HEX.match(text):
        return None
    value = int(text.removeprefix("0x").removesuffix("h"), 16)
    return -value if negative else value


class _Operand:
    """One parsed operand: kind is 'reg', 'mem' or 'imm'."""

    __slots__ = ("kind", "name", "size", "segment", "terms")

    def __init__(self, kind: str, name: str = "", size: str = "", segment: str = "", terms=()) -> None:
        self.kind = kind
        self.name = name  # register name, or the literal text of an immediate
        self.size = size  # memory size in bits as text ("32"), "" when not written
        self.segment = segment  # only fs/gs are kept: the others are defaults or meaningless in flat mode
        self.terms = terms  # memory: ((sign, register, scale) | (sign, None, literal), ...)


def _parse_memory(text: str) -> _Operand:
    head, _, rest = text.partition("[")
    inner = rest.rsplit("]", 1)[0].replace(" ", "")
    size, segment = "", ""
    for word in head.replace(":", " : ").split():
        if word in _MEMORY_SIZE:
            size = _MEMORY_SIZE[word]
        elif word in _SEGMENTS:
            segment = word
    # A segment may also be written inside the brackets by some tools: [fs:0x30].
    match = _SEGMENT_PREFIX.match(inner)
    if match and match.group(1) in _SEGMENTS:
        segment, inner = match.group(1), inner[match.end() :]
    terms = []
    for sign, term in re.findall(r"([+-]?)([^+-]+)", inner):
        sign = sign or "+"
        reg, _, scale = term.partition("*")
        if reg not in REGISTER_KIND and scale in REGISTER_KIND:  # "4*ecx" spelling
            reg, scale = scale, reg
        if reg in REGISTER_KIND:
            terms.append((sign, reg, scale if scale and scale != "1" else ""))
        else:
            terms.append((sign, None, term))
    return _Operand("mem", size=size, segment=segment if segment in ("fs", "gs") else "", terms=tuple(terms))


def _parse_operand(text: str) -> _Operand:
    words = [w for w in text.split() if w not in _NOISE_WORDS]
    text = " ".join(words)
    if "[" in text:
        return _parse_memory(text)
    name = _REGISTER_ALIASES.get(text, text)
    if name in REGISTER_KIND:
        return _Operand("reg", name=name)
    # A size keyword without brackets does not occur in well-formed text; anything else (numbers,
    # symbols such as `<kernel32.CreateFileA>`, far pointers) is an immediate or an address.
    return _Operand("imm", name=text)


def _split_instruction(mnemonic: str, op_str: str) -> tuple[str, str, list[_Operand]]:
    text = _SPACES.sub(" ", f"{mnemonic} {op_str}".strip().lower())
    words = text.split(" ")
    prefixes = []
    while len(words) > 1 and words[0] in _PREFIXES:
        prefixes.append(_PREFIXES[words.pop(0)])
    if words[:2] == ["int", "3"]:
        words = ["int3"]
    mnemonic = _canonical_mnemonic(words[0]) if words else ""
    rest = " ".join(words[1:])
    operands = [_parse_operand(part.strip()) for part in rest.split(",")] if rest else []
    # String instructions: capstone prints `movsd dword ptr es:[edi], dword ptr [esi]`, OllyDbg
    # `MOVS DWORD PTR ES:[EDI],DWORD PTR DS:[ESI]`, x64dbg `movsd`.  The operands are implicit, so the
    # canonical form is the sized mnemonic alone.  (`movsd xmm0, xmm1` is SSE and keeps its operands.)
    if mnemonic in _STRING_OPS and operands:
        size = next((op.size for op in operands if op.kind == "mem" and op.size), "")
        size = size or next((REGISTER_KIND[op.name][1:] for op in operands if op.kind == "reg"), "")
        mnemonic, operands = mnemonic + _SIZE_SUFFIX.get(size, ""), []
    elif (
        mnemonic[:-1] in _STRING_OPS
        and mnemonic[-1] in "bwdq"
        and not any(op.kind == "reg" and REGISTER_KIND[op.name] in ("xmm", "mm") for op in operands)
    ):
        operands = []
    return " ".join(prefixes), mnemonic, operands


def _kind_token(op: _Operand, mnemonic: str) -> str:
    if op.kind == "reg":
        return REGISTER_KIND[op.name]
    if op.kind == "mem":
        # lea computes an address: the "size" debuggers print for it is noise (capstone prints none).
        size = "" if mnemonic == "lea" else op.size
        return f"{op.segment}:m{size}" if op.segment else f"m{size}"
    return "rel" if mnemonic in _BRANCHES or mnemonic.startswith("j") else "imm"


def _register_token(op: _Operand, mnemonic: str) -> str:
    if op.kind == "reg":
        return op.name
    if op.kind == "imm":
        return "ADDR" if mnemonic in _BRANCHES or mnemonic.startswith("j") else "IMM"
    parts = []
    has_register = any(reg is not None for _, reg, _ in op.terms)
    for sign, reg, extra in sorted(op.terms, key=lambda t: (t[1] is None, bool(t[2]) if t[1] else 0)):
        if reg is not None:
            text = f"{reg}*{extra}" if extra else reg
        elif op.segment and not has_register:
            value = _parse_hex(sign + extra)
            text = "ADDR" if value is None else hex(value)
        else:
            text = "DISP" if has_register else "ADDR"
        if parts or sign == "-":
            parts.append(sign)
        parts.append(text)
    segment = f"{op.segment}:" if op.segment else ""
    size = "" if mnemonic == "lea" or not op.size else _SIZE_NAME[op.size] + " "
    return f"{size}{segment}[{''.join(parts)}]"


@lru_cache(maxsize=1 << 14)
def _parsed(mnemonic: str, op_str: str) -> tuple[str, str, tuple[_Operand, ...]]:
    """`_split_instruction`, kept for the next normalisation of the same text in another mode (a scan
    normalises a trace's instructions for the model and again as operand kinds for its neighbours)."""
    prefixes, mnemonic, operands = _split_instruction(mnemonic, op_str)
    return prefixes, mnemonic, tuple(operands)


@lru_cache(maxsize=1 << 18)
def normalise_instruction(mnemonic: str, op_str: str, mode: Normalisation | str) -> str:
    """The token of one instruction, from its mnemonic and operand text (any casing, any common syntax).

    Cached: a corpus repeats the same few hundred thousand instruction texts millions of times.
    """
    mode = Normalisation(mode)
    prefixes, mnemonic, operands = _parsed(mnemonic, op_str)
    head = f"{prefixes} {mnemonic}" if prefixes else mnemonic
    if mode is Normalisation.MNEMONIC or not operands:
        return head
    render = _kind_token if mode is Normalisation.OPERAND_KINDS else _register_token
    return f"{head} " + ",".join(render(op, mnemonic) for op in operands)


def normalise_text(text: str, mode: Normalisation | str) -> str:
    """Same as `normalise_instruction` for a whole disassembly line (`"MOV EAX,DWORD PTR SS:[EBP+8]"`)."""
    mnemonic, _, op_str = text.strip().partition(" ")
    return normalise_instruction(mnemonic, op_str, mode)


def api_token(name: str) -> str:
    """`kernel32.CreateFileA` -> `api:kernel32.createfilea` (names differ in case between sources)."""
    return "api:" + name.strip().lower()
