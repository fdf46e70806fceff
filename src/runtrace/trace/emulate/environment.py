"""Environment variables as Windows hands them out: `GetEnvironmentVariableA/W` and
`ExpandEnvironmentStringsA/W` with the caller's buffer size respected (tracer revision 24).

Speakeasy's handlers ignore the size: they write the whole value into whatever buffer they are given.
The usual two-call pattern (ask for the size with a 0-character buffer, allocate, call again) went
wrong at the first step: `ExpandEnvironmentStrings("%TEMP%", NULL, 0)` answered 0, the program
allocated one byte, and the second call wrote 18 bytes into it, corrupting the heap until the C
runtime's checks ended the run with `__fastfail` (an APT backdoor of the corpus, among others).  They
also miscounted (the NUL counted on success, two stray NULs after each substitution), replaced only
a variable's first occurrence, and never said ERROR_ENVVAR_NOT_FOUND.

The values are Speakeasy's environment (`windir`, `temp`, `appdata`, ...), the same ones `getenv` reads.
"""

from __future__ import annotations

from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

STDCALL = se_arch.CALL_CONV_STDCALL
ERROR_ENVVAR_NOT_FOUND = 203
MAX_TEXT = 32767  # the longest environment string Windows allows


def expand(text: str, variables: dict[str, str]) -> str:
    """`text` with each %NAME% of a defined variable (names compared without case) replaced by its
    value; an undefined %NAME% stays as written, and its closing % may open the next name."""
    out, i = [], 0
    while i < len(text):
        start = text.find("%", i)
        if start < 0:
            out.append(text[i:])
            break
        out.append(text[i:start])
        end = text.find("%", start + 1)
        if end < 0:
            out.append(text[start:])
            break
        value = variables.get(text[start + 1 : end].lower()) if end > start + 1 else None
        if value is None:
            out.append(text[start:end])
            i = end
        else:
            out.append(value)
            i = end + 1
    return "".join(out)


class Environment:
    def __init__(self, se) -> None:
        self.se = se

    @property
    def emu(self):
        return self.se.emu

    def overriding(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers that replace Speakeasy's."""
        out = []
        for suffix, wide in (("A", False), ("W", True)):
            out += [
                (("kernel32", "kernelbase"), "GetEnvironmentVariable" + suffix, 3, STDCALL,
                 lambda a, w=wide: self.variable(a, w)),
                (("kernel32", "kernelbase"), "ExpandEnvironmentStrings" + suffix, 3, STDCALL,
                 lambda a, w=wide: self.expand_strings(a, w)),
            ]  # fmt: skip
        return out

    def _read(self, address: int, wide: bool) -> str:
        return self.emu.read_mem_string(address, 2 if wide else 1, max_chars=MAX_TEXT) if address else ""

    def _answer(self, text: str, buffer: int, size: int, wide: bool) -> bool:
        """Write `text` and its NUL when `size` characters hold them; False when they do not."""
        if not buffer or size < len(text) + 1:
            return False
        self.emu.mem_write(
            buffer, text.encode("utf-16-le" if wide else "latin-1", "replace") + bytes(2 if wide else 1)
        )
        return True

    def variable(self, argv: list, wide: bool) -> int:
        """GetEnvironmentVariable(name, buffer, size): the value's length on success, the size needed
        (with the NUL) when the buffer is too small, 0 and ERROR_ENVVAR_NOT_FOUND for no such name."""
        name_at, buffer, size = argv[0], argv[1], argv[2] & 0xFFFFFFFF
        name = self._read(name_at, wide)
        argv[0] = name
        value = self.emu.get_env().get(name.lower()) if name else None
        if value is None:
            self.emu.set_last_error(ERROR_ENVVAR_NOT_FOUND)
            return 0
        return len(value) if self._answer(value, buffer, size, wide) else len(value) + 1

    def expand_strings(self, argv: list, wide: bool) -> int:
        """ExpandEnvironmentStrings(source, destination, size): the expanded text's size with its NUL,
        written only where the destination holds it (else the size needed, nothing written)."""
        source, destination, size = argv[0], argv[1], argv[2] & 0xFFFFFFFF
        text = self._read(source, wide)
        argv[0] = text
        expanded = expand(text, self.emu.get_env())
        if self._answer(expanded, destination, size, wide):
            argv[1] = expanded
        return len(expanded) + 1
