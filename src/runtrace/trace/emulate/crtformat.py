"""printf-style formatting from a `va_list`, for the C runtime's vsprintf family.

Speakeasy's formatter handles few conversions (no widths with `*`, no floating point, no `%n`, `%I64`
only partly), reads the universal C runtime's `__stdio_common_v*printf` arguments one slot off on
amd64 (the 64-bit options word is one register there, two stack slots on x86), counts the terminating
NUL in its return value and fails on the "how long would it be" call (NULL buffer, count 0) that
programs make before they allocate the buffer.  A program that formats a path or a message and uses
the result then went on with an empty string, or with a length of 0 it allocated and overran.

Here the format string is parsed as Microsoft's C runtime parses it, and arguments are read from the
`va_list` with the platform's slot sizes: 4 bytes on x86 (8 for 64-bit integers and doubles), 8 bytes
on amd64.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

from speakeasy.winenv.arch import AMD64_REG_R8, AMD64_REG_R9, AMD64_REG_RCX, AMD64_REG_RDX
from speakeasy.winenv.arch import CALL_CONV_CDECL as CDECL

MAX_STRING = 4096  # a %s argument longer than this is cut (an unterminated buffer)

# %[flags][width][.precision][size]type
_SPEC = re.compile(
    r"%(?P<flags>[-+ #0]*)(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?"
    r"(?P<size>hh|h|ll|l|L|w|I64|I32|I|j|z|t)?(?P<type>[diouxXcCsSpneEfFgGaAZ%])"
)


class VaList:
    """Successive arguments of a `va_list` in emulated memory."""

    def __init__(self, read: Callable[[int, int], bytes], address: int, ptr_size: int) -> None:
        self.read, self.address, self.ptr = read, address, ptr_size

    def _take(self, size: int) -> bytes:
        slot = max(self.ptr, size)
        data = self.read(self.address, size)
        self.address += slot
        return data

    def integer(self, size: int, signed: bool) -> int:
        return int.from_bytes(self._take(size), "little", signed=signed)

    def double(self) -> float:
        return struct.unpack("<d", self._take(8))[0]


def _int_size(size: str | None, ptr: int) -> int:
    if size in ("ll", "I64", "L"):
        return 8
    if size in ("I", "j", "z", "t"):
        return 8 if size == "j" else ptr
    return 4


def format_va(fmt: str, args: VaList, read_string: Callable[[int, bool], str], wide_function: bool) -> str:
    """The text `vsprintf(buffer, fmt, args)` writes (`wide_function` for the wchar_t variants, where
    `%s` means a wide string)."""
    out: list[str] = []
    pos = 0
    for m in _SPEC.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, kind, size = m["flags"], m["type"], m["size"]
        if kind == "%":
            out.append("%")
            continue
        width = args.integer(4, True) if m["width"] == "*" else int(m["width"] or 0)
        if width < 0:
            flags, width = flags + "-", -width
        precision_text = m["precision"]
        precision = None
        if precision_text == "*":
            precision = args.integer(4, True)
            precision = None if precision < 0 else precision
        elif precision_text is not None:
            precision = int(precision_text or 0)
        out.append(_convert(kind, size, flags, width, precision, args, read_string, wide_function))
    out.append(fmt[pos:])
    return "".join(out)


def _convert(kind, size, flags, width, precision, args, read_string, wide_function) -> str:
    ptr = args.ptr
    spec = "%" + flags + (str(width) if width else "")
    precision_spec = "" if precision is None else f".{precision}"
    if kind in "di":
        n = _int_size(size, ptr)
        value = args.integer(n, signed=True)
        value = {"h": (value + 0x8000) % 0x10000 - 0x8000, "hh": (value + 0x80) % 0x100 - 0x80}.get(
            size, value
        )
        return (spec + precision_spec + "d") % value
    if kind in "ouxX":
        value = args.integer(_int_size(size, ptr), signed=False)
        value &= {"h": 0xFFFF, "hh": 0xFF}.get(size, ~0)
        return (spec + precision_spec + ("d" if kind == "u" else kind)) % value
    if kind == "p":
        return f"{args.integer(ptr, signed=False):0{2 * ptr}X}"
    if kind in "eEfFgGaA":
        value = args.double()
        if kind in "aA":
            text = value.hex()
            return (spec + "s") % (text.upper() if kind == "A" else text)
        return (spec + precision_spec + kind) % value
    if kind == "n":  # writes the count so far: nothing a trace needs, and a classic exploit primitive
        args.integer(ptr, signed=False)
        return ""
    wide = _wide_argument(kind, size, wide_function)
    if kind in "cC":
        code = args.integer(4, signed=False) & (0xFFFF if wide else 0xFF)
        return (spec + "s") % chr(code)
    address = args.integer(ptr, signed=False)  # s, S, Z
    if kind == "Z":  # a counted string (ANSI_STRING / UNICODE_STRING): rare in user mode, left empty
        return (spec + "s") % ""
    text = "(null)" if not address else read_string(address, wide)
    return (spec + precision_spec + "s") % text


def _wide_argument(kind: str, size: str | None, wide_function: bool) -> bool:
    if size in ("l", "w"):
        return True
    if size in ("h", "hh"):
        return False
    return wide_function != kind.isupper()


# name -> (argument layout, how the output is bounded).  Layout names: opt (the universal CRT's 64-bit
# options word), buf, size (buffer capacity), count (characters to write at most), fmt, locale, file,
# va.  Bounds: "all" (unbounded), "legacy" (`_vsnprintf`: no NUL when the text just fits, -1 when cut),
# "c99" (`vsnprintf`: always NUL-terminated, returns the full length), "secure" (`vsprintf_s`
# family: NUL-terminated, -1 when cut), "count" (nothing written: printing and measuring).
_FAMILY: dict[str, tuple[tuple[str, ...], str]] = {
    "vsprintf": (("buf", "fmt", "va"), "all"),
    "vswprintf": (("buf", "fmt", "va"), "all"),  # msvcrt's export has the pre-standard signature
    "_vswprintf": (("buf", "fmt", "va"), "all"),
    "_vsnprintf": (("buf", "count", "fmt", "va"), "legacy"),
    "_vsnwprintf": (("buf", "count", "fmt", "va"), "legacy"),
    "vsnprintf": (("buf", "count", "fmt", "va"), "c99"),
    "_vscprintf": (("fmt", "va"), "count"),
    "_vscwprintf": (("fmt", "va"), "count"),
    "vsprintf_s": (("buf", "size", "fmt", "va"), "secure"),
    "vswprintf_s": (("buf", "size", "fmt", "va"), "secure"),
    "_vsnprintf_s": (("buf", "size", "count", "fmt", "va"), "secure"),
    "_vsnwprintf_s": (("buf", "size", "count", "fmt", "va"), "secure"),
    "vprintf": (("fmt", "va"), "count"),
    "vwprintf": (("fmt", "va"), "count"),
    "vfprintf": (("file", "fmt", "va"), "count"),
    "vfwprintf": (("file", "fmt", "va"), "count"),
    "__stdio_common_vsprintf": (("opt", "buf", "count", "fmt", "locale", "va"), "ucrt"),
    "__stdio_common_vswprintf": (("opt", "buf", "count", "fmt", "locale", "va"), "ucrt"),
    "__stdio_common_vsprintf_s": (("opt", "buf", "size", "fmt", "locale", "va"), "secure"),
    "__stdio_common_vswprintf_s": (("opt", "buf", "size", "fmt", "locale", "va"), "secure"),
    "__stdio_common_vsnprintf_s": (("opt", "buf", "size", "count", "fmt", "locale", "va"), "secure"),
    "__stdio_common_vsnwprintf_s": (("opt", "buf", "size", "count", "fmt", "locale", "va"), "secure"),
    "__stdio_common_vfprintf": (("opt", "file", "fmt", "locale", "va"), "count"),
    "__stdio_common_vfwprintf": (("opt", "file", "fmt", "locale", "va"), "count"),
}
# The variadic forms (older runtimes export them; the universal CRT's are inline over the above): the
# same, with the arguments after the named ones where a `va_list` would find them.  user32's wsprintf
# formats as the C runtime does for the conversions it has, into a buffer of at most 1024 characters.
_VARIADIC: dict[str, tuple[tuple[str, ...], str]] = {
    "sprintf": (("buf", "fmt"), "all"),
    "swprintf": (("buf", "fmt"), "all"),
    "_swprintf": (("buf", "fmt"), "all"),
    "_snprintf": (("buf", "count", "fmt"), "legacy"),
    "_snwprintf": (("buf", "count", "fmt"), "legacy"),
    "_scprintf": (("fmt",), "count"),
    "_scwprintf": (("fmt",), "count"),
    "sprintf_s": (("buf", "size", "fmt"), "secure"),
    "swprintf_s": (("buf", "size", "fmt"), "secure"),
    "_snprintf_s": (("buf", "size", "count", "fmt"), "secure"),
    "_snwprintf_s": (("buf", "size", "count", "fmt"), "secure"),
}
_WSPRINTF_MAX = 1024
_UCRT_STANDARD_SNPRINTF = 2  # _CRT_INTERNAL_PRINTF_STANDARD_SNPRINTF_BEHAVIOR
_TRUNCATE = (1 << 32) - 1  # _TRUNCATE as a size_t count, low 32 bits


class Formatter:
    """The vsprintf family on one emulator (`mem` has mem_read, mem_write and read_mem_string)."""

    def __init__(self, mem, bits: int) -> None:
        self.mem, self.ptr = mem, bits // 8

    def handlers(self) -> list[tuple[str, int, Callable[[list], int]]]:
        """(name, argc in stack slots or registers, handler(argv) -> return value)."""
        out = []
        for name, (layout, bound) in _FAMILY.items():
            # The 64-bit options word is two stack slots on x86.
            slots = [f for f in layout for _ in range(2 if f == "opt" and self.ptr == 4 else 1)]
            wide = "wprintf" in name or "wcs" in name

            def handler(argv, slots=slots, bound=bound, wide=wide):
                if len(argv) < len(slots):  # Speakeasy's handler declared fewer (or variable) arguments
                    argv = self.mem.emu.get_func_argv(CDECL, len(slots))
                try:
                    return self.call(dict(zip(slots, argv, strict=False)), argv, slots, bound, wide)
                except Exception:  # an unreadable format or argument: the C runtime's error return
                    return -1

            out.append((name, len(slots), handler))
        return out + self.variadic_handlers()

    def variadic_handlers(self) -> list[tuple[str, int, Callable[[list], int]]]:
        """(name, argc, handler(argv)) for the C runtime's variadic sprintf family (in `handlers`)."""
        out = []
        for name, (layout, bound) in _VARIADIC.items():
            wide = "wprintf" in name

            def handler(argv, layout=layout, bound=bound, wide=wide):
                return self._variadic(layout, bound, wide)

            out.append((name, len(layout), handler))
        return out

    def wsprintf_handlers(self) -> list[tuple[str, int, Callable[[list], int]]]:
        """user32's wsprintfA/W (buffer, format, ...): cdecl, NUL-terminated, at most 1024 characters."""
        return [
            (name, 2, lambda argv, wide=wide: self._variadic(("buf", "fmt"), "wsprintf", wide))
            for name, wide in (("wsprintfA", False), ("wsprintfW", True))
        ]

    def wvsprintf_handlers(self) -> list[tuple[str, int, Callable[[list], int]]]:
        """user32's wvsprintfA/W (buffer, format, va_list): stdcall, otherwise as wsprintf."""

        def handler(argv: list, wide: bool) -> int:
            named = {"buf": argv[0], "fmt": argv[1], "va": argv[2], "size": _WSPRINTF_MAX}
            try:
                return self.call(named, list(argv[:3]), ["buf", "fmt", "va"], "wsprintf", wide)
            except Exception:
                return -1

        return [(name, 3, lambda argv, wide=wide: handler(argv, wide)) for name, wide in
                (("wvsprintfA", False), ("wvsprintfW", True))]  # fmt: skip

    def _variadic(self, layout: tuple[str, ...], bound: str, wide: bool) -> int:
        try:
            argv, va = variadic_frame(self.mem.emu, self.ptr, len(layout))
            named = dict(zip(layout, argv, strict=True))
            named["va"] = va
            if bound == "wsprintf":
                named["size"], bound = _WSPRINTF_MAX, "wsprintf"
            return self.call(named, argv, list(layout), bound, wide)
        except Exception:  # an unreadable format or argument: the C runtime's error return
            return -1

    def call(self, named: dict, argv: list, slots: list, bound: str, wide: bool) -> int:
        if "opt" in named:  # the low word (x86: the first of its two slots)
            named["opt"] = argv[slots.index("opt")]
        fmt = self._string(named["fmt"], wide)
        text = format_va(fmt, VaList(self._read, named["va"], self.ptr), self._string, wide)
        if bound == "ucrt":
            bound = "c99" if named["opt"] & _UCRT_STANDARD_SNPRINTF else "legacy"
        return self._write(named.get("buf", 0), named.get("size"), named.get("count"), text, bound, wide)

    def _write(self, buf: int, size, count, text: str, bound: str, wide: bool) -> int:
        n = len(text)
        if bound == "count" or not buf:
            return n
        if bound == "all":
            return self._put(buf, text, True, wide) or n
        if bound == "legacy":
            if n > count:
                self._put(buf, text[:count], False, wide)
                return -1
            self._put(buf, text, n < count, wide)
            return n
        if bound == "c99":
            if count:
                self._put(buf, text[: count - 1], True, wide)
            return n
        if bound == "wsprintf":  # cut to the buffer's 1024 characters, terminated; the count written
            return self._put(buf, text[: size - 1], True, wide) or min(n, size - 1)
        limit = size - 1 if size else 0  # secure
        if count is not None and (count & 0xFFFFFFFF) != _TRUNCATE:
            limit = min(limit, count)
        if size:
            self._put(buf, text[:limit], True, wide)
        return n if n <= limit else -1

    def _put(self, buf: int, text: str, terminate: bool, wide: bool) -> int:
        text += "\0" if terminate else ""
        self.mem.mem_write(buf, text.encode("utf-16-le" if wide else "latin-1", "replace"))
        return 0

    def _read(self, address: int, size: int) -> bytes:
        return bytes(self.mem.mem_read(address, size))

    def _string(self, address: int, wide: bool) -> str:
        try:
            return self.mem.read_mem_string(address, 2 if wide else 1, max_chars=MAX_STRING)
        except Exception:  # an unreadable string argument formats as nothing rather than ending the run
            return ""


def variadic_frame(emu, ptr: int, fixed: int) -> tuple[list[int], int]:
    """At a variadic cdecl function's first instruction: its `fixed` named arguments and the address
    where a `va_list` over the rest starts.  On amd64 the register arguments are first written to the
    callee's home space, as a variadic function's prolog does, so that the list runs on through them."""
    sp = emu.get_stack_ptr()
    if ptr == 8:
        regs = [emu.reg_read(r) for r in (AMD64_REG_RCX, AMD64_REG_RDX, AMD64_REG_R8, AMD64_REG_R9)]
        emu.mem_write(sp + 8, b"".join(r.to_bytes(8, "little") for r in regs))
    args = [int.from_bytes(bytes(emu.mem_read(sp + ptr * (i + 1), ptr)), "little") for i in range(fixed)]
    return args, sp + ptr * (fixed + 1)
