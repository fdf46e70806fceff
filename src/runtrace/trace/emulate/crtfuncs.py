"""C runtime functions Speakeasy lacks or answers wrongly: `operator new`/`delete`, string functions,
`FILE` streams and `printf`.

Found by classifying the coverage benchmark's short traces (docs/tracer.md): programs stopped because
- Speakeasy's `operator new` (`??2@YAPAXI@Z`) returns nothing, so the caller used whatever eax held
  (an earlier result: a small integer, a stack address) as the new object;
- `fopen` and the rest of stdio's file functions have no handler: the stub's NULL means "cannot
  open", and a program reading its own file or a configuration file gave up;
- `strncat`, `wcsrchr`, `wcschr` have none either: a program building a path got 0 back (cx_Freeze's
  launchers exit with "Unable to calculate directory of executable");
- at tracer revision 22, malware runs that ended with fewer than 1,000 API calls had `mbstowcs` (39
  runs), `rename` (21) and `_strnicmp` (10) stubbed: a converted string never written, a dropped file
  never renamed (-1 would be failure; the stub's 0 said "done" and nothing moved); `strpbrk` (a
  parser's search for a separator) answered NULL, "none there"; `_mbsinc` (the next character of a
  multibyte string, code page 1252: the next byte) answered NULL, and the program read through it;
- at revision 23, `realloc` (5 such runs of about 530) had none: NULL, "out of memory".

Files are Speakeasy's emulated files (the same ones CreateFile and ReadFile see); a `FILE *` is a small
zeroed block the program may look into, mapped here to its file and position.  The standard streams
(`__acrt_iob_func`, `_iob`) are not files here: writes to them succeed and reads find nothing.
"""

from __future__ import annotations

import io

from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate import allocations, filedata
from runtrace.trace.emulate.crtformat import VaList, format_va, variadic_frame

CDECL = se_arch.CALL_CONV_CDECL
_FILE_SIZE = 0x40
MAX_STRING = 0x10000
EOF = 0xFFFFFFFF  # -1 as a C int


def _ascii_lower(char: str) -> str:
    return char.lower() if "A" <= char <= "Z" else char


class CrtFunctions:
    def __init__(self, se, ptr: int) -> None:
        self.se, self.ptr = se, ptr
        self.files: dict[int, object] = {}  # FILE * -> Speakeasy File
        self.environment: dict[tuple[str, bool], int] = {}  # (name, wide) -> getenv's string

    # -- helpers ---------------------------------------------------------------------------------------

    @property
    def emu(self):
        return self.se.emu

    def _args(self, argv: list, n: int) -> list[int]:
        """The first n arguments (Speakeasy's own handler of the name may have declared fewer)."""
        if len(argv) >= n:
            return list(argv[:n])
        return list(self.emu.get_func_argv(CDECL, n))

    def _string(self, address: int, wide: bool) -> str:
        if not address:
            return ""
        return self.emu.read_mem_string(address, 2 if wide else 1, max_chars=MAX_STRING)

    def _write_string(self, address: int, text: str, wide: bool) -> None:
        data = text.encode("utf-16-le" if wide else "latin-1", "replace") + (b"\0\0" if wide else b"\0")
        self.emu.mem_write(address, data)

    def _alloc(self, size: int) -> int:
        return self.emu.heap_alloc(max(size, 1), heap="runtrace.crt")

    def handlers(self) -> list[tuple[str, int, object]]:
        """(name, argc, handler(argv)) for every C runtime module (cdecl)."""
        new = [("??2@YAPAXI@Z", 1), ("??_U@YAPAXI@Z", 1), ("??2@YAPEAX_K@Z", 1), ("??_U@YAPEAX_K@Z", 1)]
        nothrow = ["??2@YAPAXIABUnothrow_t@std@@@Z", "??_U@YAPAXIABUnothrow_t@std@@@Z",
                   "??2@YAPEAX_KAEBUnothrow_t@std@@@Z", "??_U@YAPEAX_KAEBUnothrow_t@std@@@Z"]  # fmt: skip
        new += [(name, 2) for name in nothrow]
        delete = ["??3@YAXPAX@Z", "??_V@YAXPAX@Z", "??3@YAXPEAX@Z", "??_V@YAXPEAX@Z", "??3@YAXPAXI@Z",
                  "??3@YAXPEAX_K@Z", "??_V@YAXPAXI@Z", "??_V@YAXPEAX_K@Z"]  # fmt: skip
        out: list[tuple[str, int, object]] = [(name, n, self.new) for name, n in new]
        out += [(name, 1, lambda a: 0) for name in delete]
        out += [("realloc", 2, self.realloc), ("_recalloc", 3, self.recalloc), ("_msize", 1, self.msize)]
        out += [
            ("strncat", 3, lambda a: self.strncat(a, False)),
            ("wcsncat", 3, lambda a: self.strncat(a, True)),
            ("wcschr", 2, lambda a: self.find_char(a, True, last=False)),
            ("wcsrchr", 2, lambda a: self.find_char(a, True, last=True)),
            ("strpbrk", 2, lambda a: self.find_any(a, False)),
            # Single-byte code page (1252): a character is a byte.
            ("_mbsinc", 1, lambda a: (self._args(a, 1)[0] + 1) & self._mask),
            ("_mbsdec", 2, lambda a: self.previous_byte(*self._args(a, 2))),
            ("wcspbrk", 2, lambda a: self.find_any(a, True)),
            ("_strdup", 1, lambda a: self.strdup(a, False)),
            ("_itoa", 3, lambda a: self.int_to_text(a, False, signed=True)),
            ("_ltoa", 3, lambda a: self.int_to_text(a, False, signed=True)),
            ("_ultoa", 3, lambda a: self.int_to_text(a, False, signed=False)),
            ("_itow", 3, lambda a: self.int_to_text(a, True, signed=True)),
            ("_ltow", 3, lambda a: self.int_to_text(a, True, signed=True)),
            ("_ultow", 3, lambda a: self.int_to_text(a, True, signed=False)),
            ("_wcsdup", 1, lambda a: self.strdup(a, True)),
            ("mbstowcs", 3, lambda a: self.convert(a, to_wide=True)),
            ("wcstombs", 3, lambda a: self.convert(a, to_wide=False)),
            ("_strnicmp", 3, lambda a: self.compare_n_nocase(a, False)),
            ("_wcsnicmp", 3, lambda a: self.compare_n_nocase(a, True)),
            ("rename", 2, lambda a: self.rename(a, False)),
            ("_wrename", 2, lambda a: self.rename(a, True)),
            ("getenv", 1, lambda a: self.getenv(a, False)),
            ("_wgetenv", 1, lambda a: self.getenv(a, True)),
            ("fopen", 2, lambda a: self.fopen(a, False)),
            ("_wfopen", 2, lambda a: self.fopen(a, True)),
            ("_fsopen", 3, lambda a: self.fopen(a, False)),
            ("_wfsopen", 3, lambda a: self.fopen(a, True)),
            ("fopen_s", 3, lambda a: self.fopen_s(a, False)),
            ("_wfopen_s", 3, lambda a: self.fopen_s(a, True)),
            ("fclose", 1, self.fclose),
            ("fread", 4, self.fread),
            ("fwrite", 4, self.fwrite),
            ("_write", 3, self.write_fd),
            ("fseek", 3, lambda a: self.fseek(a, wide_offset=False)),
            ("_fseeki64", 3, lambda a: self.fseek(a, wide_offset=True)),
            ("ftell", 1, self.ftell),
            ("_ftelli64", 1, self.ftell),
            ("rewind", 1, self.rewind),
            ("feof", 1, self.feof),
            ("fgets", 3, lambda a: self.fgets(a, False)),
            ("fgetws", 3, lambda a: self.fgets(a, True)),
            ("fgetc", 1, self.fgetc),
            ("getc", 1, self.fgetc),
            ("fputs", 2, lambda a: self.fputs(a, False)),
            ("fputws", 2, lambda a: self.fputs(a, True)),
            ("fputc", 2, self.fputc),
            ("putc", 2, self.fputc),
            ("printf", 1, lambda a: self.printf(0, False)),
            ("wprintf", 1, lambda a: self.printf(0, True)),
            ("fprintf", 2, lambda a: self.printf(1, False)),
            ("fwprintf", 2, lambda a: self.printf(1, True)),
            ("vprintf", 2, lambda a: self.vprintf(a, 0, False)),
            ("vwprintf", 2, lambda a: self.vprintf(a, 0, True)),
            ("vfprintf", 3, lambda a: self.vprintf(a, 1, False)),
            ("vfwprintf", 3, lambda a: self.vprintf(a, 1, True)),
        ]
        return out

    # -- memory ------------------------------------------------------------------------------------------

    def new(self, argv: list) -> int:
        (size,) = self._args(argv, 1)
        return self._alloc(size & ((1 << (8 * self.ptr)) - 1))

    def realloc(self, argv: list) -> int:
        """realloc(block, size) (`allocations.reallocate`).  Speakeasy has no realloc: the stub's NULL was
        "out of memory" to every program growing a buffer."""
        block, size = self._args(argv, 2)
        return allocations.reallocate(self.emu, block, size & ((1 << (8 * self.ptr)) - 1), self._alloc)

    def recalloc(self, argv: list) -> int:
        """_recalloc(block, count, size): realloc to count * size bytes, the bytes past the old ones zero
        (an allocation here starts zeroed)."""
        block, count, size = self._args(argv, 3)
        return self.realloc([block, (count * size) & ((1 << (8 * self.ptr)) - 1)])

    def msize(self, argv: list) -> int:
        """_msize(block): the allocation's size (Speakeasy's, rounded up to 16 bytes); -1 for no block."""
        (block,) = self._args(argv, 1)
        old = allocations.allocation(self.emu, block)
        return old.get_size() if old is not None else (1 << (8 * self.ptr)) - 1

    # -- strings -----------------------------------------------------------------------------------------

    def getenv(self, argv: list, wide: bool) -> int:
        """The value of an environment variable Speakeasy's environment has (`windir`, `temp`, ...; the
        same values GetEnvironmentVariable gives), as a string the runtime owns; NULL for others."""
        (name,) = self._args(argv, 1)
        key = (self._string(name, wide).lower(), wide)
        value = self.emu.get_env().get(key[0])
        if value is None:
            return 0
        if key not in self.environment:
            address = self._alloc((len(value) + 1) * (2 if wide else 1))
            self._write_string(address, value, wide)
            self.environment[key] = address
        return self.environment[key]

    def strncat(self, argv: list, wide: bool) -> int:
        dst, src, count = self._args(argv, 3)
        head, tail = self._string(dst, wide), self._string(src, wide)[:count]
        self._write_string(dst, head + tail, wide)
        return dst

    @property
    def _mask(self) -> int:
        return (1 << (8 * self.ptr)) - 1

    @staticmethod
    def previous_byte(start: int, current: int) -> int:
        """_mbsdec(start, current): the character before `current`, NULL when there is none."""
        return current - 1 if current > start else 0

    def find_char(self, argv: list, wide: bool, last: bool) -> int:
        text, char = self._args(argv, 2)
        value = self._string(text, wide) + "\0"  # the terminator can be searched for
        needle = chr(char & (0xFFFF if wide else 0xFF))
        index = value.rfind(needle) if last else value.find(needle)
        return 0 if index < 0 else text + index * (2 if wide else 1)

    def find_any(self, argv: list, wide: bool) -> int:
        """strpbrk/wcspbrk(text, accept): the first character of text that is in accept, NULL where
        none is (the terminators are not searched for)."""
        text, accept = self._args(argv, 2)
        value, wanted = self._string(text, wide), set(self._string(accept, wide))
        index = next((i for i, c in enumerate(value) if c in wanted), -1)
        return 0 if index < 0 else text + index * (2 if wide else 1)

    def strdup(self, argv: list, wide: bool) -> int:
        (text,) = self._args(argv, 1)
        if not text:
            return 0
        value = self._string(text, wide)
        copy = self._alloc((len(value) + 1) * (2 if wide else 1))
        self._write_string(copy, value, wide)
        return copy

    def int_to_text(self, argv: list, wide: bool, signed: bool) -> int:
        """_itoa/_ltoa/_ultoa(value, buffer, radix) and the wide forms: the digits of a 32-bit value
        (negative only in base 10, as the runtime does) written to the buffer; returns the buffer.
        Speakeasy's `_itoa` wrote nothing and returned nothing."""
        value, buffer, radix = self._args(argv, 3)
        value &= 0xFFFFFFFF
        if not buffer or not 2 <= radix <= 36:
            return buffer
        negative = signed and radix == 10 and value >= 0x80000000
        if negative:
            value = 0x100000000 - value
        digits = ""
        while True:
            value, digit = divmod(value, radix)
            digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
            if not value:
                break
        self._write_string(buffer, ("-" if negative else "") + digits, wide)
        return buffer

    def convert(self, argv: list, to_wide: bool) -> int:
        """mbstowcs(wchar_t *dest, const char *src, n) and wcstombs(char *dest, const wchar_t *src, n) in
        the "C" locale (a byte is the character of that code, latin-1): with no dest, the length the
        result needs (without its NUL); else at most n characters converted, the NUL written only where
        there is room, and the count converted (without the NUL).  A NULL source is (size_t)-1."""
        dest, src, count = self._args(argv, 3)
        if not src:
            return (1 << (8 * self.ptr)) - 1
        text = self._string(src, not to_wide)
        if not dest:
            return len(text)
        part = text[:count]
        data = part.encode("utf-16-le" if to_wide else "latin-1", "replace")
        if len(part) < count:
            data += b"\0\0" if to_wide else b"\0"
        if data:
            self.emu.mem_write(dest, data)
        return len(part)

    def compare_n_nocase(self, argv: list, wide: bool) -> int:
        """_strnicmp/_wcsnicmp(a, b, n): the first n characters compared without case ("C" locale: ASCII
        letters folded to lower case), negative, 0 or positive as the runtime answers.  Speakeasy has
        no `_strnicmp`, and its `_wcsnicmp` answers 1 for any difference (a sort or a binary search
        goes wrong) and fails on NULL."""
        first, second, count = self._args(argv, 3)
        if not count:
            return 0
        if not first or not second:
            return 0x7FFFFFFF  # _NLSCMPERROR
        limit = min(count, MAX_STRING)
        a = self.emu.read_mem_string(first, 2 if wide else 1, max_chars=limit)[:limit] + "\0"
        b = self.emu.read_mem_string(second, 2 if wide else 1, max_chars=limit)[:limit] + "\0"
        for x, y in zip(a, b, strict=False):
            x, y = ord(_ascii_lower(x)), ord(_ascii_lower(y))
            if x != y:
                return (x - y) & 0xFFFFFFFF
            if not x:
                break
        return 0

    # -- files -------------------------------------------------------------------------------------------

    def rename(self, argv: list, wide: bool) -> int:
        """rename(old, new) over Speakeasy's emulated files: 0 when moved, -1 when `old` does not exist or
        the run has a file at `new` (the runtime's rename does not replace one).  The contents move with
        the name (the way `sysapi`'s MoveFile moves them), so a program that renames its dropped copy can
        run it."""
        old_at, new_at = self._args(argv, 2)
        old, new = self._string(old_at, wide), self._string(new_at, wide)
        if len(argv) >= 2:
            argv[0], argv[1] = old, new  # the paths, not their addresses, go into the trace
        fileman = self.emu.fileman
        data = filedata.file_bytes(fileman, old) if old else None
        if data is None or not new:
            return EOF
        if filedata.path_key(old) == filedata.path_key(new):
            return 0
        # Only a file the run has blocks the name: Speakeasy serves a stand-in for any path of some
        # extensions (every .exe "exists"), which would make each rename to an .exe fail.
        if filedata.find_file(fileman, new) is not None:
            return EOF
        fileman.create_file(filedata.clean_path(new)).add_data(data)
        moved = filedata.find_file(fileman, old)
        if moved is not None:
            fileman.files.remove(moved)
        return 0

    # -- streams -----------------------------------------------------------------------------------------

    def _open(self, path: str, mode: str):
        """A Speakeasy File for fopen's mode, or None when it cannot be opened."""
        emu = self.emu
        if not path:
            return None
        exists = emu.does_file_exist(path)
        if mode.startswith("r") or (mode.startswith("a") and exists):
            if not exists:
                return None
            handle = emu.fileman.file_open(path, create=False)
        else:  # "w" truncates or creates, "a" appends or creates
            handle = emu.fileman.file_open(path, create=True, truncate=mode.startswith("w"))
        f = emu.file_get(handle) if handle else None
        if f is None:
            return None
        if mode.startswith("w"):
            f.remove_data()
        elif mode.startswith("a"):
            f.seek(0, io.SEEK_END)
        return f

    def fopen(self, argv: list, wide: bool) -> int:
        path, mode = self._args(argv, 2)
        f = self._open(self._string(path, wide), self._string(mode, wide))
        if f is None:
            return 0
        stream = self._alloc(_FILE_SIZE)
        self.emu.mem_write(stream, bytes(_FILE_SIZE))
        self.files[stream] = f
        return stream

    def fopen_s(self, argv: list, wide: bool) -> int:
        out, path, mode = self._args(argv, 3)
        stream = self.fopen([path, mode], wide)
        if out:
            self.emu.mem_write(out, stream.to_bytes(self.ptr, "little"))
        return 0 if stream else 2  # ENOENT

    def fclose(self, argv: list) -> int:
        (stream,) = self._args(argv, 1)
        self.files.pop(stream, None)
        return 0

    def fread(self, argv: list) -> int:
        buffer, size, count, stream = self._args(argv, 4)
        f = self.files.get(stream)
        if f is None or not size or not count:
            return 0
        data = f.get_data(min(size * count, 1 << 26)) or b""
        if buffer and data:
            self.emu.mem_write(buffer, data)
        return len(data) // size

    def fwrite(self, argv: list) -> int:
        buffer, size, count, stream = self._args(argv, 4)
        f = self.files.get(stream)
        if f is not None and size and count:
            f.add_data(bytes(self.emu.mem_read(buffer, min(size * count, 1 << 26))))
        return count  # a standard stream: written

    def write_fd(self, argv: list) -> int:
        """_write(fd, buffer, count): the low-level write under the runtime's stdio.  Descriptors 0-2
        are the standard streams, whose writes succeed here as `fwrite`'s do; no other descriptor is
        open (this emulation has no `_open`): -1, EBADF.  Speakeasy had no handler, and its stub's 0
        ("nothing written") made the runtime's buffer flush write again, forever."""
        fd, _buffer, count = self._args(argv, 3)
        return count & 0xFFFFFFFF if fd & 0xFFFFFFFF in (0, 1, 2) else EOF

    def fseek(self, argv: list, wide_offset: bool) -> int:
        """fseek(stream, long offset, origin); _fseeki64's offset is 64 bits (two stack slots on x86)."""
        if wide_offset and self.ptr == 4:
            stream, low, high, origin = self._args(argv, 4)
            offset, bits = low | high << 32, 64
        else:
            stream, offset, origin = self._args(argv, 3)
            bits = 64 if wide_offset else 32
        f = self.files.get(stream)
        if f is None or origin not in (0, 1, 2):
            return EOF
        offset &= (1 << bits) - 1
        offset -= (1 << bits) if offset >> (bits - 1) else 0
        if f.data is None:
            f.add_data(b"")
        f.seek(offset, origin)
        return 0

    def ftell(self, argv: list) -> int:
        (stream,) = self._args(argv, 1)
        f = self.files.get(stream)
        if f is None:
            return EOF
        return f.tell() or 0

    def rewind(self, argv: list) -> int:
        (stream,) = self._args(argv, 1)
        f = self.files.get(stream)
        if f is not None:
            f.seek(0, io.SEEK_SET)
        return 0

    def feof(self, argv: list) -> int:
        (stream,) = self._args(argv, 1)
        f = self.files.get(stream)
        if f is None:
            return 1
        return int((f.tell() or 0) >= f.get_size())

    def fgets(self, argv: list, wide: bool) -> int:
        buffer, count, stream = self._args(argv, 3)
        f = self.files.get(stream)
        if f is None or count <= 1 or not buffer:
            return 0
        line = b""
        while len(line) < count - 1:
            byte = f.get_data(1)
            if not byte:
                break
            line += byte
            if byte == b"\n":
                break
        if not line:
            return 0
        self._write_string(buffer, line.decode("latin-1"), wide)
        return buffer

    def fgetc(self, argv: list) -> int:
        (stream,) = self._args(argv, 1)
        f = self.files.get(stream)
        byte = f.get_data(1) if f is not None else b""
        return byte[0] if byte else EOF

    def fputs(self, argv: list, wide: bool) -> int:
        text, stream = self._args(argv, 2)
        f = self.files.get(stream)
        if f is not None:
            f.add_data(self._string(text, wide).encode("latin-1", "replace"))
        return 0

    def fputc(self, argv: list) -> int:
        char, stream = self._args(argv, 2)
        f = self.files.get(stream)
        if f is not None:
            f.add_data(bytes([char & 0xFF]))
        return char & 0xFF

    # -- formatted output --------------------------------------------------------------------------------

    def printf(self, fixed: int, wide: bool) -> int:
        """printf(fmt, ...) (fixed 0) and fprintf(stream, fmt, ...) (fixed 1): the variadic arguments
        are read where a `va_list` would find them (amd64: the register arguments are written to the
        callee's home space first, as a variadic function's prolog does)."""
        args, va = variadic_frame(self.emu, self.ptr, fixed + 1)
        return self._print(args[:fixed], args[fixed], va, wide)

    def vprintf(self, argv: list, fixed: int, wide: bool) -> int:
        args = self._args(argv, fixed + 2)
        return self._print(args[:fixed], args[fixed], args[fixed + 1], wide)

    def _print(self, stream: list[int], fmt: int, va: int, wide: bool) -> int:
        try:
            text = format_va(
                self._string(fmt, wide),
                VaList(lambda a, n: bytes(self.emu.mem_read(a, n)), va, self.ptr),
                lambda a, w: self._string(a, w),
                wide,
            )
        except Exception:  # an unreadable format or argument
            return EOF
        f = self.files.get(stream[0]) if stream else None
        if f is not None:
            f.add_data(text.encode("latin-1", "replace"))
        return len(text)
