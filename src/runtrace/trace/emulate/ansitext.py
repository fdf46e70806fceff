"""ANSI text as the emulated Windows has it: code page 1252 (Speakeasy's `GetACP`), one byte a character.

Speakeasy answered the text helpers against that code page wrongly:

- `IsDBCSLeadByte` said every byte starts a two-byte character (it returns True): a program building a
  lead-byte table from it (WinRAR's self-extractor asks for all 256 bytes) then stepped over every
  second character of its paths;
- `CharPrevA/W` had no handler, so the stub's NULL came back: NSIS's `lastchar()` read the byte at NULL
  (0, not a backslash) and appended another one every time (`C:\\Windows\\temp\\\\\\x.dat`), and its
  `trimslashtoend()` wrote its terminator through that NULL;
- `CharNextA/W` went past a string's terminating NUL, where Windows stays on it; `CharNextExA` and
  `CharPrevExA` had no handler, and Wine's cmd.exe, given the stub's NULL for its next character, called
  it 574,000 times until the time limit (revision 25);
- `WideCharToMultiByte` returned the size of the caller's buffer instead of the bytes it converted,
  wrote UTF-8 and wrote past a short buffer: 364 of the corpus's 827 short malware runs (revision 22)
  got such a count back, and a self-extractor that sized its next name with it built garbage paths;
- `LoadStringA/W` returned bytes, not characters (twice the length for W), wrote no NUL, truncated to
  the whole buffer and encoded the A string as UTF-8: a WinRAR self-extractor's message kept the tail
  of the longer text before it (`"...%s folderbutton to start..."`);
- `MultiByteToWideChar` ignored the byte count it was given (it read to the next NUL: the C runtime's
  locale set-up converts the 256 bytes 0..255 and was told 268), decoded code page 1252 as UTF-8
  (dropping every byte above 0x7F) and wrote past a short buffer; the runtime's case tables were then
  built from a failed conversion (revision 24).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

STDCALL = se_arch.CALL_CONV_STDCALL
ERROR_SUCCESS, ERROR_INSUFFICIENT_BUFFER, ERROR_INVALID_PARAMETER = 0, 122, 87
ERROR_RESOURCE_NAME_NOT_FOUND = 1814
ERROR_NO_UNICODE_TRANSLATION = 1113
MB_ERR_INVALID_CHARS = 0x8
CP_ACP, CP_OEMCP, CP_MACCP, CP_THREAD_ACP, CP_UTF7, CP_UTF8 = 0, 1, 2, 3, 65000, 65001
# The code pages a program gets by name or by alias, as Python names them (US English Windows).
_CODECS = {CP_ACP: "cp1252", CP_THREAD_ACP: "cp1252", CP_OEMCP: "cp437", CP_MACCP: "mac_roman",
           CP_UTF7: "utf-7", CP_UTF8: "utf-8"}  # fmt: skip
_MAX_CHARS = 1 << 20  # a "NUL-terminated" source without a NUL this near is unreadable memory anyway


def _int(value: int) -> int:
    """A C `int` argument: its low 32 bits, signed (an amd64 caller leaves the slot's upper half as it
    was: `0x1010101000000022` is 34)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


@functools.cache
def _byte_table(codec: str) -> dict[int, str]:
    """str.translate's table from a byte (as its latin-1 character) to the character it is in `codec`,
    for a single-byte code page; the five bytes code page 1252 leaves undefined stay as they are, as
    Windows maps them."""
    table = {}
    for b in range(256):
        char = bytes([b]).decode(codec, "ignore") or chr(b)
        if char != chr(b):
            table[b] = char
    return table


def copied_string(text: str, size: int, codec: str) -> tuple[str, bytes]:
    """What a function filling a buffer of `size` characters copies of `text` (at most size - 1 of
    them) and the bytes it writes (those and a NUL)."""
    copied = text[: max(size - 1, 0)]
    return copied, copied.encode(codec, "replace") + ("\0".encode(codec))


class AnsiText:
    def __init__(self, se, ptr: int) -> None:
        self.se, self.ptr = se, ptr

    def overriding(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers that replace Speakeasy's own (modules, name, argc, convention, fn(argv))."""
        k32 = ("kernel32", "kernelbase")
        return [
            (("user32",), "CharNextA", 1, STDCALL, lambda a: self.char_next(a[0], 1)),
            (("user32",), "CharNextW", 1, STDCALL, lambda a: self.char_next(a[0], 2)),
            (("user32",), "CharPrevA", 2, STDCALL, lambda a: self.char_prev(a[0], a[1], 1)),
            (("user32",), "CharPrevW", 2, STDCALL, lambda a: self.char_prev(a[0], a[1], 2)),
            # (CodePage, lpCurrentChar, dwFlags) and (CodePage, lpStart, lpCurrentChar, dwFlags)
            (("user32",), "CharNextExA", 3, STDCALL, lambda a: self.char_next(a[1], 1)),
            (("user32",), "CharPrevExA", 4, STDCALL, lambda a: self.char_prev(a[1], a[2], 1)),
            (k32, "IsDBCSLeadByte", 1, STDCALL, lambda a: 0),  # code page 1252 has no lead bytes
            (k32, "IsDBCSLeadByteEx", 2, STDCALL, lambda a: 0),  # nor do 437 and the others above
            (k32, "WideCharToMultiByte", 8, STDCALL, self.wide_char_to_multi_byte),
            (k32, "MultiByteToWideChar", 6, STDCALL, self.multi_byte_to_wide_char),
            (("user32",), "LoadStringA", 4, STDCALL, lambda a: self.load_string(a, wide=False)),
            (("user32",), "LoadStringW", 4, STDCALL, lambda a: self.load_string(a, wide=True)),
        ]

    def char_next(self, p: int, width: int) -> int:
        if not p:
            return 0
        return p if not any(self.se.emu.mem_read(p, width)) else p + width

    def char_prev(self, start: int, current: int, width: int) -> int:
        # At (or before) the start of the string Windows answers the start.
        return start if current <= start else current - width

    def load_string(self, argv: list, wide: bool) -> int:
        """LoadString(hInstance, uID, lpBuffer, cchBufferMax): at most cchBufferMax - 1 characters and a
        NUL, the characters copied returned; LoadStringW with cchBufferMax 0 writes a read-only pointer
        to the resource's text (not NUL-terminated) and returns its length."""
        instance, uid, buffer, size = argv[:4]
        emu = self.se.emu
        pe = emu.modules[0][0] if instance == 0 else emu.get_mod_from_addr(instance)
        text = None
        if pe is not None and (instance == 0 or instance == pe.get_base()):
            text = emu.api.load_api_handler("user32").find_string_resource_by_id(pe, uid & 0xFFFF)
        if not text:
            emu.set_last_error(ERROR_RESOURCE_NAME_NOT_FOUND)
            return 0
        size = size if size < 0x80000000 else size - (1 << 32)
        if not buffer or size < 0 or (size == 0 and not wide):
            emu.set_last_error(ERROR_INVALID_PARAMETER)
            return 0
        codec = "utf-16-le" if wide else "cp1252"
        if size == 0:
            offset = pe.get_memory_mapped_image().find(text.encode(codec))
            if offset < 0:
                emu.set_last_error(ERROR_RESOURCE_NAME_NOT_FOUND)
                return 0
            emu.mem_write(buffer, (pe.get_base() + offset).to_bytes(self.ptr, "little"))
            return len(text)
        copied, written = copied_string(text, size, codec)
        emu.mem_write(buffer, written)
        argv[2] = copied
        return len(copied)

    def _wide_source(self, p: int, count: int) -> str:
        emu = self.se.emu
        if count != -1:
            return bytes(emu.mem_read(p, 2 * count)).decode("utf-16-le", "replace")
        out = bytearray()
        while len(out) < 2 * _MAX_CHARS:
            # A page at a time, a character at a time near the end of readable memory.
            step = 0x1000 - (p + len(out)) % 0x1000
            try:
                chunk = bytes(emu.mem_read(p + len(out), step))
            except Exception:
                chunk = bytes(emu.mem_read(p + len(out), 2))
            for i in range(0, len(chunk) - 1, 2):
                if chunk[i] == 0 and chunk[i + 1] == 0:
                    out += chunk[: i + 2]  # the NUL is converted too, and counted
                    return out.decode("utf-16-le", "replace")
            out += chunk[: len(chunk) & ~1]
        raise ValueError("no terminating NUL")

    def _multi_byte_source(self, p: int, count: int) -> bytes:
        emu = self.se.emu
        if count != -1:
            return bytes(emu.mem_read(p, count))
        out = bytearray()
        while len(out) < _MAX_CHARS:
            step = 0x1000 - (p + len(out)) % 0x1000
            try:
                chunk = bytes(emu.mem_read(p + len(out), step))
            except Exception:
                chunk = bytes(emu.mem_read(p + len(out), 1))
            end = chunk.find(0)
            if end >= 0:
                return bytes(out + chunk[: end + 1])  # the NUL is converted too, and counted
            out += chunk
        raise ValueError("no terminating NUL")

    def multi_byte_to_wide_char(self, argv: list) -> int:
        """MultiByteToWideChar(code page, flags, source, bytes, destination, characters): exactly
        `bytes` bytes converted (-1: through the NUL, which is counted); with no room asked for
        (characters 0) the characters needed; a short destination is filled and the call fails."""
        code_page, flags, source, count, dest, size = argv[:6]
        emu = self.se.emu
        code_page, flags, count, size = code_page & 0xFFFFFFFF, flags & 0xFFFFFFFF, _int(count), _int(size)
        codec = _CODECS.get(code_page, "cp1252")
        if not source or count == 0 or count < -1 or size < 0 or (dest == source and size):
            emu.set_last_error(ERROR_INVALID_PARAMETER)
            return 0
        data = self._multi_byte_source(source, count)
        if codec in ("utf-8", "utf-7"):
            try:
                text = data.decode(codec, "strict" if flags & MB_ERR_INVALID_CHARS else "replace")
            except UnicodeDecodeError:
                emu.set_last_error(ERROR_NO_UNICODE_TRANSLATION)
                return 0
        else:
            text = data.decode("latin-1").translate(_byte_table(codec))
        argv[2] = text.rstrip("\0")  # the trace shows the text, as for the other string arguments
        encoded = text.encode("utf-16-le", "surrogatepass")
        if size == 0:
            emu.set_last_error(ERROR_SUCCESS)
            return len(encoded) // 2
        if len(encoded) > 2 * size:
            emu.mem_write(dest, encoded[: 2 * size])
            emu.set_last_error(ERROR_INSUFFICIENT_BUFFER)
            return 0
        emu.mem_write(dest, encoded)
        emu.set_last_error(ERROR_SUCCESS)
        return len(encoded) // 2

    def wide_char_to_multi_byte(self, argv: list) -> int:
        code_page, _flags, source, count, dest, size, default_char, p_used_default = argv[:8]
        emu = self.se.emu
        code_page, count, size = code_page & 0xFFFFFFFF, _int(count), _int(size)
        codec = _CODECS.get(code_page, "cp1252")  # another installed code page: as the ANSI one
        if not source or count == 0 or count < -1 or size < 0 or (dest == source and size):
            emu.set_last_error(ERROR_INVALID_PARAMETER)
            return 0
        text = self._wide_source(source, count)
        replacement = b"?"
        if default_char and codec != "utf-8":
            replacement = bytes(emu.mem_read(default_char, 1))
        encoded = bytearray()
        used_default = False
        for ch in text:
            try:
                encoded += ch.encode(codec)
            except UnicodeEncodeError:
                encoded += replacement
                used_default = True
        if p_used_default and codec != "utf-8":
            emu.mem_write(p_used_default, int(used_default).to_bytes(4, "little"))
        if size == 0:  # the size query: bytes needed, the NUL included when the source has it
            emu.set_last_error(ERROR_SUCCESS)
            return len(encoded)
        if len(encoded) > size:
            emu.mem_write(dest, bytes(encoded[:size]))  # Windows fills the buffer, then fails
            emu.set_last_error(ERROR_INSUFFICIENT_BUFFER)
            return 0
        emu.mem_write(dest, bytes(encoded))
        emu.set_last_error(ERROR_SUCCESS)
        return len(encoded)
