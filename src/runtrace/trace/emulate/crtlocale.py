"""The C runtime's locale state a program reads at start-up: its character-class table (`_pctype`,
`_ctype`, `_isctype`) and its multibyte code page (`_setmbcp`, `_getmbcp`).

Visual C++'s `isdigit`, `isspace`, `isalpha`... are macros that index `_pctype` (msvcrt exports the
pointer as data; `_ctype` is the table itself, one entry before it for EOF) when `__mb_cur_max` is 1,
and call `_isctype(c, mask)` otherwise.  Neither had a value here: the import of `_pctype` kept an API
trampoline's address, whose bytes the program took for the table pointer, and its first `isdigit`
faulted (the `_except_handler3`/`_XcptFilter` exit of several short corpus runs, revision 22).

The table is the "C" locale's, the one a program has until it calls `setlocale`: the bit flags of
ctype.h for the ASCII characters, nothing for 0x80-0xFF.  Letters also carry 0x100, the `_ALPHA` bit
later runtimes test (`_ALPHA` is 0x100 | _UPPER | _LOWER; a test of either form agrees).

`_setmbcp`, called by MFC programs' start-up (29 short corpus runs at revision 22), was a stub; its 0
happened to mean success.  Here it keeps the code page for `_getmbcp`, resolves the symbolic values
(_MB_CP_ANSI/_OEM/_LOCALE/_SBCS) to the emulated system's code pages, and fails (-1, errno EINVAL) for
one Windows does not know, as msvcrt does when GetCPInfo fails.
"""

from __future__ import annotations

import struct

UPPER, LOWER, DIGIT, SPACE, PUNCT, CONTROL, BLANK, HEX, ALPHA = 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0x100


def flags(c: int) -> int:
    """The "C" locale's class bits of the character `c` (0-255; -1 is EOF, 0)."""
    if not 0 <= c < 0x80:
        return 0
    ch = chr(c)
    out = 0
    if c < 0x20 or c == 0x7F:
        out |= CONTROL
    if ch in "\t\n\v\f\r ":
        out |= SPACE
    if ch == " ":
        out |= BLANK
    if ch.isdigit():
        out |= DIGIT
    if "A" <= ch <= "Z":
        out |= UPPER | ALPHA
    if "a" <= ch <= "z":
        out |= LOWER | ALPHA
    if ch in "0123456789ABCDEFabcdef":
        out |= HEX
    if 0x21 <= c <= 0x7E and not ch.isalnum():
        out |= PUNCT
    return out


def table() -> bytes:
    """`_ctype`: 257 unsigned shorts, EOF's first; `_pctype` points at the second."""
    return struct.pack("<257H", *(flags(c) for c in range(-1, 256)))


def isctype(argv) -> int:
    """`int _isctype(int c, int mask)`: the class bits of `c` within `mask`.  (msvcrt asks
    GetStringTypeA for a value outside -1..255; none of those is classified in the "C" locale.)"""
    c, mask = argv[0] & 0xFFFFFFFF, argv[1] & 0xFFFF
    c = c - (1 << 32) if c & 0x80000000 else c
    return flags(c) & mask if -1 <= c <= 255 else 0


ANSI_CODE_PAGE, OEM_CODE_PAGE = 1252, 437  # the emulated system's (English Windows)
MB_CP_SBCS, MB_CP_OEM, MB_CP_ANSI, MB_CP_LOCALE = 0, -2, -3, -4
# Code pages an English Windows installs (GetCPInfo succeeds): ANSI, OEM, the East Asian double-byte
# ones (whose lead bytes the runtime records), UTF-7/8 and the Mac/ISO families are left out.
KNOWN_CODE_PAGES = frozenset(
    (437, 737, 775, 850, 852, 855, 857, 860, 861, 862, 863, 864, 865, 866, 869, 874, 932, 936, 949, 950,
     1250, 1251, 1252, 1253, 1254, 1255, 1256, 1257, 1258, 1361)
)  # fmt: skip


class MultibyteCodePage:
    """The runtime's current multibyte code page; the "C" locale's single-byte one to start with."""

    def __init__(self) -> None:
        self.code_page = 0

    def set(self, argv) -> int:
        """`int _setmbcp(int codepage)`: 0, or -1 for a code page the system lacks."""
        cp = argv[0] & 0xFFFFFFFF
        cp = cp - (1 << 32) if cp & 0x80000000 else cp
        resolved = {MB_CP_ANSI: ANSI_CODE_PAGE, MB_CP_LOCALE: ANSI_CODE_PAGE, MB_CP_OEM: OEM_CODE_PAGE}.get(
            cp, cp
        )
        if resolved != MB_CP_SBCS and resolved not in KNOWN_CODE_PAGES:
            return 0xFFFFFFFF
        self.code_page = resolved
        return 0

    def get(self, argv) -> int:
        """`int _getmbcp(void)`: the code page `_setmbcp` set, 0 for single-byte."""
        return self.code_page
