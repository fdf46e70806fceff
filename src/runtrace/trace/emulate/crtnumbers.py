"""The C runtime's text-to-number functions: `atoi`/`atol`, `strtol`/`strtoul` and their wide forms.

At tracer revision 23, 21 malware runs that ended with fewer than 1,000 API calls (APT1's backdoors
among them) had `atol` stubbed: the 0 it answered was the port, the sleep interval or the count their
configuration parser had just read, and the program gave up.  Speakeasy's `atoi` answers 0 for "80\\r\\n"
or "12abc" (it hands the whole string to Python's `int`) and lets a negative value through unmasked;
`strtol` and the rest have no handler.

Parsed as the "C" locale does: leading white space, an optional sign, then digits of the base; the
first character that is not one ends the number.  `long` is 32 bits on Windows (x86 and amd64 alike);
out-of-range values saturate as the runtime's `strtol` does.  The 64-bit forms (`_atoi64`,
`_strtoi64`) return in edx:eax on x86, which the handlers here cannot set, so they are left out.
"""

from __future__ import annotations

from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate.apigroup import ApiGroup

CDECL = se_arch.CALL_CONV_CDECL
MAX_DIGITS = 512  # enough for any number; a longer run of digits only saturates
_SPACE = " \t\n\v\f\r"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
LONG_MIN, LONG_MAX, ULONG_MAX = -(1 << 31), (1 << 31) - 1, (1 << 32) - 1


def parse_long(text: str, base: int, unsigned: bool) -> tuple[int, int]:
    """(value as the 32-bit result, characters consumed) of `strtol`/`strtoul(text, &end, base)`.

    Nothing parsed (no digit, or a base other than 0 and 2..36) consumes 0 characters and is 0, as
    the runtime answers.  `strtoul` of a negative number negates it modulo 2**32."""
    if base != 0 and not 2 <= base <= 36:
        return 0, 0
    i = 0
    while i < len(text) and text[i] in _SPACE:
        i += 1
    negative = i < len(text) and text[i] == "-"
    if i < len(text) and text[i] in "+-":
        i += 1
    has_hex_prefix = text[i : i + 2].lower() == "0x" and _digit(text[i + 2 : i + 3], 16) is not None
    if base in (0, 16) and has_hex_prefix:
        base, i = 16, i + 2
    elif base == 0:
        base = 8 if text[i : i + 1] == "0" else 10
    start, value = i, 0
    while i < len(text) and (digit := _digit(text[i], base)) is not None:
        value = value * base + digit
        i += 1
    if i == start:
        return 0, 0
    if unsigned:
        value = ULONG_MAX if value > ULONG_MAX else value
        return (-value if negative else value) & ULONG_MAX, i
    value = -value if negative else value
    return max(LONG_MIN, min(LONG_MAX, value)) & ULONG_MAX, i


def _digit(char: str, base: int) -> int | None:
    index = _DIGITS.find(char.lower()) if len(char) == 1 else -1
    return index if 0 <= index < base else None


class CrtNumbers(ApiGroup):
    def handlers(self) -> list[tuple[str, int, object]]:
        """(name, argc, handler(argv)) for every C runtime module (cdecl)."""
        out: list[tuple[str, int, object]] = []
        for wide, names in ((False, ("atoi", "atol")), (True, ("_wtoi", "_wtol"))):
            out += [(name, 1, lambda a, wide=wide: self.to_number(a, wide)) for name in names]
        for name, wide, unsigned in (
            ("strtol", False, False),
            ("strtoul", False, True),
            ("wcstol", True, False),
            ("wcstoul", True, True),
        ):
            out.append((name, 3, lambda a, wide=wide, unsigned=unsigned: self.strtol(a, wide, unsigned)))
        return out

    def _args(self, argv: list, n: int) -> list[int]:
        return list(argv[:n]) if len(argv) >= n else list(self.emu.get_func_argv(CDECL, n))

    def _text(self, address: int, wide: bool) -> str:
        return self.emu.read_mem_string(address, 2 if wide else 1, max_chars=MAX_DIGITS) if address else ""

    def to_number(self, argv: list, wide: bool) -> int:
        """atoi/atol/_wtoi/_wtol(text): strtol in base 10 without the end pointer."""
        (text,) = self._args(argv, 1)
        return parse_long(self._text(text, wide), 10, unsigned=False)[0]

    def strtol(self, argv: list, wide: bool, unsigned: bool) -> int:
        """strtol/strtoul/wcstol/wcstoul(text, &end, base): the value, and `*end` set to the first
        character not parsed (the text itself when nothing was)."""
        text, end, base = self._args(argv, 3)
        base &= 0xFFFFFFFF  # an int: an amd64 caller may leave the slot's upper half set
        value, consumed = parse_long(self._text(text, wide), base, unsigned)
        if end:
            self.emu.mem_write(end, (text + consumed * (2 if wide else 1)).to_bytes(self.ptr, "little"))
        return value
