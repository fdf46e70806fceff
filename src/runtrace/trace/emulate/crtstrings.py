"""C runtime string functions Speakeasy has no handler for: tokenising (`strtok`, `wcstok` and their `_s`
forms), case conversion in place (`_strlwr`, `_strupr` and the wide forms) and the multibyte-string
functions (`_mbscmp`, `_mbsicmp`, `_mbschr`, `_mbsrchr`, `_mbsstr`, `_mbslen`) (tracer revision 24).

At revision 23 these were stubs among malware runs that ended with fewer than 1,000 API calls: a
command parser whose `wcstok` found no token, a comparison (`_mbscmp`) that said every two names were
equal.  The emulated Windows has code page 1252, one byte a character, so the `_mbs` functions are
their single-byte counterparts; case is folded in the "C" locale (ASCII letters).
"""

from __future__ import annotations

from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate.apigroup import ApiGroup

CDECL = se_arch.CALL_CONV_CDECL
MAX_STRING = 0x10000


def _c_lower(text: str) -> str:
    return "".join(c.lower() if "A" <= c <= "Z" else c for c in text)


def _c_upper(text: str) -> str:
    return "".join(c.upper() if "a" <= c <= "z" else c for c in text)


def _order(a: str, b: str) -> int:
    """strcmp's answer as a C int: -1, 0 or 1 (in 32 bits)."""
    return 0 if a == b else (0xFFFFFFFF if a < b else 1)


class CrtStrings(ApiGroup):
    def __init__(self, se, ptr: int) -> None:
        super().__init__(se, ptr)
        self.saved: dict[bool, int] = {}  # strtok's and wcstok's place in their string (by width)

    def handlers(self) -> list[tuple[str, int, object]]:
        """(name, argc, handler(argv)) for every C runtime module (cdecl)."""
        out: list[tuple[str, int, object]] = [
            ("strtok", 2, lambda a: self.token(a, False, None)),
            ("wcstok", 2, lambda a: self.token(a, True, None)),
            ("strtok_s", 3, lambda a: self.token(a, False, a[2])),
            ("wcstok_s", 3, lambda a: self.token(a, True, a[2])),
            ("_mbstok", 2, lambda a: self.token(a, False, None)),
            ("_mbscmp", 2, lambda a: _order(self._text(a[0]), self._text(a[1]))),
            ("_mbsicmp", 2, lambda a: _order(_c_lower(self._text(a[0])), _c_lower(self._text(a[1])))),
            ("_mbschr", 2, lambda a: self.find(a, last=False)),
            ("_mbsrchr", 2, lambda a: self.find(a, last=True)),
            ("_mbsstr", 2, self.find_text),
            ("_mbslen", 1, lambda a: len(self._text(a[0]))),
        ]
        for name, wide, convert in (
            ("_strlwr", False, _c_lower), ("_strupr", False, _c_upper),
            ("_wcslwr", True, _c_lower), ("_wcsupr", True, _c_upper),
            ("_mbslwr", False, _c_lower), ("_mbsupr", False, _c_upper),
        ):  # fmt: skip
            out.append(
                (name, 1, lambda a, wide=wide, convert=convert: self.convert_case(a[0], wide, convert))
            )
        return out

    def _text(self, address: int, wide: bool = False) -> str:
        return self.emu.read_mem_string(address, 2 if wide else 1, max_chars=MAX_STRING) if address else ""

    def _write(self, address: int, text: str, wide: bool) -> None:
        self.emu.mem_write(address, text.encode("utf-16-le" if wide else "latin-1", "replace"))

    def token(self, argv: list, wide: bool, context: int | None) -> int:
        """strtok(text, delimiters): the next token's address, its end overwritten with a NUL; NULL when
        only delimiters are left.  A NULL text goes on where the last call stopped (kept here, or in
        `*context` for the `_s` forms)."""
        start, delimiters_at = argv[0], argv[1]
        width = 2 if wide else 1
        if not start:
            if context is not None:
                start = (
                    int.from_bytes(bytes(self.emu.mem_read(context, self.ptr)), "little") if context else 0
                )
            else:
                start = self.saved.get(wide, 0)
        if not start:
            return 0
        text, delimiters = self._text(start, wide), set(self._text(delimiters_at, wide))
        first = next((i for i, c in enumerate(text) if c not in delimiters), len(text))
        if first == len(text):
            self._save(wide, context, 0)
            return 0
        end = next((i for i in range(first, len(text)) if text[i] in delimiters), len(text))
        if end < len(text):
            self._write(start + end * width, "\0", wide)
            self._save(wide, context, start + (end + 1) * width)
        else:
            self._save(wide, context, start + end * width)  # at the NUL: the next call finds nothing
        return start + first * width

    def _save(self, wide: bool, context: int | None, place: int) -> None:
        if context is None:
            self.saved[wide] = place
        elif context:
            self.emu.mem_write(context, place.to_bytes(self.ptr, "little"))

    def find(self, argv: list, last: bool) -> int:
        """_mbschr/_mbsrchr(text, character): its address, or NULL; the NUL itself is found at the end."""
        address, char = argv[0], argv[1] & 0xFF
        text = self._text(address) + "\0"
        index = text.rfind(chr(char)) if last else text.find(chr(char))
        return address + index if index >= 0 and address else 0

    def find_text(self, argv: list) -> int:
        """_mbsstr(text, part): where `part` first occurs, or NULL."""
        index = self._text(argv[0]).find(self._text(argv[1]))
        return argv[0] + index if index >= 0 and argv[0] else 0

    def convert_case(self, address: int, wide: bool, convert) -> int:
        """_strlwr/_strupr (and wide, _mbs forms): the string converted in place; returns it."""
        if address:
            self._write(address, convert(self._text(address, wide)), wide)
        return address
