"""Rewriting debugger disassembly (OllyDbg MASM, x64dbg) into capstone's Intel syntax.

Emulated traces are tokenised from capstone's text; a trace imported from a text log must produce the
same tokens for the same instruction, or a model would learn the debugger instead of the program.
`normalise_syntax` maps e.g.

    MOV EAX,DWORD PTR SS:[EBP+8]      ->  mov eax, dword ptr [ebp + 8]
    lea ecx,dword ptr ds:[ecx+edx*4+10] ->  lea ecx, [ecx + edx*4 + 0x10]
    JNZ SHORT 00401020                ->  jne 0x401020
    REP MOVS DWORD PTR ES:[EDI],DWORD PTR DS:[ESI]
                                      ->  rep movsd dword ptr es:[edi], dword ptr [esi]

and leaves capstone's own text unchanged.  Numbers without `0x` are hexadecimal, as both debuggers
print them (capstone prints only 0-9 in decimal, which read the same in hex).

Limits (text alone cannot decide them): an immediate that capstone prints signed or unsigned
depending on the encoding follows the usual compiler encoding (see `_immediate`); x64dbg's resolved
RIP-relative addresses stay absolute; symbolic operands (`<kernel32.GetProcAddress>`) are kept,
lower-cased.
"""

from __future__ import annotations

import re
from functools import lru_cache

_PREFIXES = frozenset(
    ["rep", "repe", "repz", "repne", "repnz", "lock", "bnd", "notrack", "xacquire", "xrelease"]
)
_CONDITION_ALIASES = {
    "z": "e", "nz": "ne", "c": "b", "nae": "b", "nc": "ae", "nb": "ae", "na": "be", "nbe": "a",
    "nge": "l", "nl": "ge", "ng": "le", "nle": "g", "pe": "p", "po": "np",
}  # fmt: skip
_MNEMONIC_ALIASES = {
    "retn": "ret", "pushad": "pushal", "popad": "popal", "sal": "shl", "fwait": "wait",
    "xlat": "xlatb", "loopz": "loope", "loopnz": "loopne",
}  # fmt: skip
_SIZE_ALIASES = {"tbyte": "xword", "tword": "xword", "dqword": "xmmword", "oword": "xmmword"}
_SIZE_BITS = {"byte": 8, "word": 16, "dword": 32, "qword": 64}
_STRING_OPS = {"movs", "stos", "lods", "scas", "cmps"}
_SIZE_SUFFIX = {"byte": "b", "word": "w", "dword": "d", "qword": "q"}
_SUFFIX_SIZE = {v: k for k, v in _SIZE_SUFFIX.items()}
_ACCUMULATOR = {"b": "al", "w": "ax", "d": "eax", "q": "rax"}
# Instructions whose sign-extended imm8 (and, in 64-bit code, imm32) capstone prints signed.
_SIGNED_IMMEDIATE = frozenset(["add", "sub", "cmp", "adc", "sbb", "push", "imul"])


def _register_bits() -> dict[str, int]:
    regs: dict[str, int] = {}
    for name in ["al", "cl", "dl", "bl", "ah", "ch", "dh", "bh", "spl", "bpl", "sil", "dil"]:
        regs[name] = 8
    for name in ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"]:
        regs[name] = 16
        regs["e" + name] = 32
        regs["r" + name] = 64
    for i in range(8, 16):
        regs[f"r{i}"], regs[f"r{i}d"], regs[f"r{i}w"], regs[f"r{i}b"] = 64, 32, 16, 8
    return regs


_REGISTER_BITS = _register_bits()

_NUMBER = re.compile(r"(-)?(?:0x([0-9a-f]+)|([0-9][0-9a-f]*)h|([0-9a-f]+))")
_MODULE_ADDRESS = re.compile(r"[a-z_][\w\-]*(?:\.[\w\-]+)*\.(?:0x)?([0-9a-f]{4,16})")
_SIZES = "byte|word|dword|fword|qword|tbyte|tword|xword|oword|dqword|xmmword|ymmword|zmmword|mmword"
_SIZE_PTR = re.compile(rf"({_SIZES})\s+ptr\s*")
_SEGMENT = re.compile(r"([cdefgs]s)\s*:\s*")
_ST_REGISTER = re.compile(r"st\s*\(?\s*([0-7])\s*\)?")


def mnemonic_of(text: str) -> str:
    """The mnemonic of a normalised instruction as capstone reports it, prefixes included
    (`rep movsb byte ptr ...` -> `rep movsb`)."""
    words = text.split(" ")
    k = 0
    while k < len(words) - 1 and words[k] in _PREFIXES:
        k += 1
    return " ".join(words[: k + 1])


def parse_number(token: str) -> int | None:
    """`0x1F`, `1Fh`, `1F`, `-8` (all hexadecimal, lower case expected) -> int; None if not a number."""
    m = _NUMBER.fullmatch(token)
    if m is None:
        return None
    digits = m.group(2) or m.group(3) or m.group(4)
    value = int(digits, 16)
    return -value if m.group(1) else value


def format_number(value: int) -> str:
    """Capstone's style: 0-9 in decimal, larger values in 0x hex, a minus sign before negatives."""
    if value < 0:
        return "-" + format_number(-value)
    return str(value) if value <= 9 else f"{value:#x}"


@lru_cache(maxsize=1 << 16)
def normalise_syntax(text: str, bits: int = 32) -> str:
    """One instruction's disassembly in capstone's Intel syntax ("mnemonic op1, op2"), lower case."""
    words = " ".join(text.strip().lower().split()).split(" ")
    prefixes: list[str] = []
    while len(words) > 1 and words[0] in _PREFIXES:
        prefixes.append(words.pop(0))
    mnemonic = _mnemonic(words[0])
    rest = " ".join(words[1:])
    operands = [op for op in (_operand(raw, bits) for raw in _split_operands(rest)) if op]

    sized = _sized_string_op(mnemonic, operands)
    if sized is not None:
        mnemonic, operands = sized, _string_operands(sized, bits)
    if mnemonic == "lea":
        operands = [_SIZE_PTR.sub("", op, count=1) if "[" in op else op for op in operands]
    operands = _immediates(mnemonic, operands, bits)
    if mnemonic == "mov" and bits == 64:
        mnemonic = _movabs(operands)
    prefixes = [_rep_prefix(p, mnemonic) for p in prefixes]
    head = " ".join([*prefixes, mnemonic])
    return f"{head} {', '.join(operands)}" if operands else head


def _mnemonic(word: str) -> str:
    word = _MNEMONIC_ALIASES.get(word, word)
    for stem in ("j", "set", "cmov"):
        if word.startswith(stem) and word[len(stem) :] in _CONDITION_ALIASES:
            return stem + _CONDITION_ALIASES[word[len(stem) :]]
    return word


def _split_operands(rest: str) -> list[str]:
    """Split at commas that are not inside [...] or <...> (symbols may hold commas)."""
    out, depth, current = [], 0, []
    for ch in rest:
        if ch in "[<(":
            depth += 1
        elif ch in "]>)":
            depth = max(depth - 1, 0)
        if ch == "," and depth == 0:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return [op.strip() for op in out if op.strip()]


def _operand(op: str, bits: int) -> str:
    for word in ("short ", "near "):
        if op.startswith(word):
            op = op[len(word) :].strip()
    size = ""
    m = _SIZE_PTR.match(op)
    if m:
        size = _SIZE_ALIASES.get(m.group(1), m.group(1)) + " ptr "
        op = op[m.end() :]
    segment = ""
    m = _SEGMENT.match(op)
    if m and op[m.end() :].startswith("["):
        if m.group(1) in ("fs", "gs") or (bits == 32 and m.group(1) in ("es", "cs")):
            segment = m.group(1) + ":"  # ds and ss are the defaults; in 64-bit code only fs/gs count
        op = op[m.end() :]
    if op.startswith("[") and op.endswith("]"):
        return f"{size}{segment}[{_address(op[1:-1].strip())}]"
    if op.startswith("<"):
        return size + op
    value = parse_number(op)
    if value is None:
        m = _MODULE_ADDRESS.fullmatch(op)  # OllyDbg/x64dbg label a code address with its module
        if m:
            value = int(m.group(1), 16)
    if value is not None:
        return size + format_number(value)
    m = _ST_REGISTER.fullmatch(op)
    if m:
        return f"st({m.group(1)})"
    return size + op


def _address(expr: str) -> str:
    """`ecx+edx*4+10` -> `ecx + edx*4 + 0x10`; base and index first, displacement last."""
    if "<" in expr:
        return expr  # a symbol: nothing to rearrange
    registers, displacement = [], 0
    for sign, term in re.findall(r"([+-]?)\s*([^+\-]+)", expr):
        term = term.strip()
        if "*" in term:
            a, _, b = (t.strip() for t in term.partition("*"))
            if parse_number(a) is not None and parse_number(b) is None:
                a, b = b, a  # MASM allows 4*edx
            scale = parse_number(b)
            registers.append(f"{a}*{scale if scale is not None else b}")
            continue
        value = parse_number(term)
        if value is None:
            m = _MODULE_ADDRESS.fullmatch(term)
            value = int(m.group(1), 16) if m else None
        if value is None:
            registers.append(term)
        else:
            displacement += -value if sign == "-" else value
    if not registers:
        return format_number(displacement)
    out = " + ".join(registers)
    if displacement > 0:
        out += f" + {format_number(displacement)}"
    elif displacement < 0:
        out += f" - {format_number(-displacement)}"
    return out


def _sized_string_op(mnemonic: str, operands: list[str]) -> str | None:
    """`movs` + `dword ptr` -> `movsd` (and `movsd` stays) when this is a string instruction."""
    if mnemonic in _STRING_OPS:
        size = next((op.split(" ")[0] for op in operands if " ptr " in op), "")
        suffix = _SIZE_SUFFIX.get(size)
        return mnemonic + suffix if suffix else None
    # movsd/cmpsd are also SSE instructions: a string op has no operands or only si/di memory.
    is_sized = mnemonic[:-1] in _STRING_OPS and mnemonic[-1] in _SUFFIX_SIZE
    if is_sized and all(re.search(r"\[[er]?(si|di)\]", op) for op in operands):
        return mnemonic
    return None


def _string_operands(mnemonic: str, bits: int) -> list[str]:
    """The operands capstone prints for a sized string instruction (implicit ones included)."""
    op, suffix = mnemonic[:-1], mnemonic[-1]
    size = _SUFFIX_SIZE[suffix]
    pointer = "r" if bits == 64 else "e"
    es = "" if bits == 64 else "es:"
    dst, src = f"{size} ptr {es}[{pointer}di]", f"{size} ptr [{pointer}si]"
    acc = _ACCUMULATOR[suffix]
    return {
        "movs": [dst, src],
        "cmps": [src, dst],
        "stos": [dst, acc],
        "lods": [acc, src],
        "scas": [acc, dst],
    }[op]


def _operand_bits(operand: str, bits: int) -> int | None:
    first = operand.split(" ")[0]
    if first in _SIZE_BITS and " ptr " in operand:
        return _SIZE_BITS[first]
    return _REGISTER_BITS.get(operand)


def _immediates(mnemonic: str, operands: list[str], bits: int) -> list[str]:
    """Print immediates signed or unsigned as capstone does for the usual encoding.

    Capstone prints a sign-extended imm8 of add/sub/cmp/adc/sbb/push/imul signed (`add esp, -8`),
    and in 64-bit code their sign-extended imm32 too; every other immediate unsigned at the operand
    width (`and esp, 0xfffffff0`, `mov eax, 0xffffffff`).  Compilers use the imm8 form whenever the
    value fits, so a value in -128..-1 is taken to be one.
    """
    if not operands:
        return operands
    width = bits if mnemonic == "push" else _operand_bits(operands[0], bits)
    if width is None or width > 64:
        return operands
    out = list(operands)
    for i, op in enumerate(operands):
        if i == 0 and mnemonic != "push":
            continue
        value = parse_number(op)
        if value is None:
            continue
        mask = (1 << width) - 1
        if value < -(1 << (width - 1)) or value > mask:
            continue  # does not fit the operand: leave as written
        signed = value - (1 << width) if value >= 1 << (width - 1) else value
        if mnemonic in _SIGNED_IMMEDIATE and width > 8 and signed < 0:
            limit = 1 << 31 if bits == 64 and width == 64 else 128
            out[i] = format_number(signed if signed >= -limit else value & mask)
        else:
            out[i] = format_number(value & mask)
    return out


def _movabs(operands: list[str]) -> str:
    """Capstone calls a mov with a 64-bit immediate or a 64-bit absolute address `movabs`."""
    if len(operands) == 2 and _REGISTER_BITS.get(operands[0]) == 64:
        value = parse_number(operands[1])
        if value is not None and not -(1 << 31) <= value < 1 << 31:
            return "movabs"
    for op in operands:
        m = re.fullmatch(r"\w+ ptr \[(0x[0-9a-f]+)\]", op)
        if m and int(m.group(1), 16) >= 1 << 32:
            return "movabs"
    return "mov"


def _rep_prefix(prefix: str, mnemonic: str) -> str:
    """Capstone spells F3 `rep` before movs/stos/lods, `repe` before cmps/scas; F2 `repne`."""
    stem = mnemonic[:-1] if mnemonic[-1:] in _SUFFIX_SIZE else mnemonic
    if stem not in _STRING_OPS:
        return "repz" if prefix in ("rep", "repe") else prefix  # `rep ret` is capstone's `repz ret`
    if prefix in ("rep", "repe", "repz"):
        return "repe" if stem in ("cmps", "scas") else "rep"
    if prefix in ("repne", "repnz"):
        return "repne"
    return prefix
