"""Reading NUL-terminated strings from emulated memory a page at a time instead of a character at a time.

Speakeasy's `read_mem_string` and `mem_string_len` read one character per `mem_read` (a ctypes call that
allocates a buffer) until the NUL: a quarter of the tracer's time on programs that pass paths and
names to many API calls (`lstrcat`, `FindFirstFile`, `GetFullPathName` in a loop).  These read up to the
end of the page the string is in, look for the NUL there, and go on page by page.  unicorn maps memory
in whole pages, so a read within one page fails exactly when Speakeasy's first character read in that
page would, with the same error; a character that straddles two pages is read on its own, as Speakeasy
reads it.  The strings, lengths and errors are Speakeasy's own, which the tests check against its
functions on the same memory.
"""

from __future__ import annotations

PAGE = 0x1000  # unicorn's page on x86 and amd64: memory is mapped and unmapped in whole pages
MAX_TEXT = 0x100000  # the longest C string `c_text` reads from a program


def c_text(emu, address: int, limit: int = MAX_TEXT) -> bytes:
    """The bytes of the NUL-terminated string at `address`, without the NUL (at most `limit` of them;
    none for NULL), read a page at a time: what handlers of C++ runtime classes copy."""
    if not address:
        return b""
    out = b""
    while len(out) < limit:
        chunk = min(PAGE - (address + len(out)) % PAGE, limit - len(out))
        part = bytes(emu.mem_read(address + len(out), chunk))
        end = part.find(b"\0")
        if end >= 0:
            return out + part[:end]
        out += part
    return out


def install(emu) -> None:
    """Replace one Speakeasy emulator's string readers (its API handlers call them through `emu`)."""

    def read(address: int, size: int) -> bytes:
        return emu.mem_read(address, size)  # looked up at each call, as Speakeasy's readers do

    def up_to_nul(address: int, width: int, max_chars: int = 0) -> tuple[bytes, bool]:
        """The characters from `address` up to and including the first NUL (at most `max_chars`, 0: no
        limit), and whether the NUL was found."""
        chunks: list[bytes] = []
        count = 0
        while not max_chars or count < max_chars:
            room = (PAGE - address % PAGE) // width  # whole characters left in this page
            if max_chars:
                room = min(room, max_chars - count)
            if room == 0:  # a character across a page boundary
                char = read(address, width)
                chunks.append(char)
                if not any(char):
                    return b"".join(chunks), True
                address, count = address + width, count + 1
                continue
            data = read(address, room * width)
            end = _nul_at(data, width)
            if end >= 0:
                chunks.append(data[: end + width])
                return b"".join(chunks), True
            chunks.append(data)
            address, count = address + room * width, count + room
        return b"".join(chunks), False

    def read_mem_string(address, width=1, max_chars=0):
        if width == 1:
            decode = "latin1"
        elif width == 2:
            decode = "utf-16le"
        else:
            raise ValueError("Invalid string encoding")  # Speakeasy's error
        string, _ = up_to_nul(address, width, max_chars)
        try:
            return string.decode(decode, "ignore").replace("\x00", "")
        except Exception:  # (as Speakeasy's; neither codec can fail with "ignore")
            return string.replace(b"\x00", b"")

    def mem_string_len(address, width=1):
        string, _ = up_to_nul(address, width)
        return len(string) // width - 1

    emu.read_mem_string = read_mem_string
    emu.mem_string_len = mem_string_len


def _nul_at(data: bytes, width: int) -> int:
    """The offset of the first NUL character (`width` zero bytes at a multiple of `width`), or -1."""
    if width == 1:
        return data.find(b"\0")
    nul = b"\0" * width
    at = data.find(nul)
    while at >= 0 and at % width:
        at = data.find(nul, at + 1)
    return at
