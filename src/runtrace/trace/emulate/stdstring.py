"""Visual C++ 6's `std::string` (msvcp60.dll's `basic_string<char>`), whose members programs import by name.

Stubbed, `_Tidy`, `_Copy` and `assign` left the string's buffer NULL while the program's inline code
(`c_str()`, `size()`, the inlined half of `assign`) went on to write through it: VC6 programs with a
global `std::string` faulted in their C-runtime initialisers, before `main`.  The class is Dinkumware's
(VC6 `<xstring>`), and most of it is inline in the program, so the layout must be its own, as the
programs' inline code reads it (checked with capstone at call sites: `c_str()` reads the pointer at +4 and
takes `_Nullstr()` when it is NULL, `size()` reads +8, the inlined `_Grow` calls `_Tidy(true)`,
`_Copy(n)` and then writes the text through the pointer at +4 itself):

- `{allocator (1 byte, padded); char *_Ptr; size_t _Len; size_t _Res;}`;
- the buffer is `_Res + 2` characters: a reference count byte at `_Ptr[-1]` (0: one owner, 255:
  frozen), the text, a NUL at `_Ptr[_Len]`;
- `_Copy(n)` allocates `n | 31` characters (`_MIN_SIZE`) and keeps the old text (cut to that);
- `_Tidy(built)` drops the buffer when `built` (a shared one loses one reference), and zeroes all three.

Copies never share a buffer here (Dinkumware shares one by the count byte when a whole string is
assigned): the program sees the same text, and a buffer it writes through is always its own.  Freed
buffers are not reused.  Members are `__thiscall` (`this` in ecx, the callee pops its arguments); the
free `operator+` is `__cdecl` and returns its result through a hidden first argument.  The two data
exports, `npos` (-1) and `_Nullstr()`'s empty string, get storage (`data_export`): unfilled, an import of
`npos` read as 0 and `assign(s, 0, npos)` copied nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate.strings import c_text

_MIN_SIZE = 31
_FROZEN = 255
_NPOS = 0xFFFFFFFF

_STRING = "?$basic_string@DU?$char_traits@D@std@@V?$allocator@D@2@@std@@"
_MEMBER = "@" + _STRING  # a member's name is `?name@` + this


def _name(member: str, signature: str) -> str:
    return f"?{member}{_MEMBER}{signature}"


def _free(operator: str, returns: str, parameters: str) -> str:
    """A free `std::operator` over strings: `??<op>std@@YA` (global, __cdecl), its return type, the
    first parameter's type, the rest."""
    return f"??{operator}std@@YA{returns}{_STRING[:-5]}{parameters}"


class StdStrings:
    """msvcp60.dll's `basic_string<char>` members over the emulated memory of one x86 program."""

    def __init__(self, se) -> None:
        self.se = se

    @property
    def emu(self):
        return self.se.emu

    def handlers(self) -> dict[tuple[str, str], tuple[int, Callable]]:
        """(module, mangled name) -> (stack arguments popped, handler(emu, argv))."""
        s = self
        members = {
            _name("_Tidy", "AAEX_N@Z"): (1, lambda a: s.tidy(s._this(), a[0] & 0xFF)),
            _name("_Copy", "AAEXI@Z"): (1, lambda a: s.copy(s._this(), a[0])),
            _name("_Eos", "AAEXI@Z"): (1, lambda a: s.eos(s._this(), a[0])),
            _name("_Grow", "AAE_NI_N@Z"): (2, lambda a: s.grow(s._this(), a[0], a[1] & 0xFF)),
            _name("_Freeze", "AAEXXZ"): (0, lambda a: s.freeze(s._this())),
            _name("_Split", "AAEXXZ"): (0, lambda a: s.split(s._this())),
            _name("assign", "QAEAAV12@PBDI@Z"): (2, lambda a: s.assign(s._this(), s._read(a[0], a[1]))),
            _name("assign", "QAEAAV12@ABV12@II@Z"): (3, lambda a: s.assign(s._this(), s._part(*a[:3]))),
            _name("append", "QAEAAV12@PBDI@Z"): (2, lambda a: s.append(s._this(), s._read(a[0], a[1]))),
            _name("append", "QAEAAV12@ABV12@II@Z"): (3, lambda a: s.append(s._this(), s._part(*a[:3]))),
            _name("append", "QAEAAV12@ID@Z"): (2, lambda a: s.append(s._this(), bytes([a[1] & 0xFF]) * a[0])),
            _name("insert", "QAEAAV12@IPBDI@Z"): (3, lambda a: s.insert(s._this(), a[0], s._read(*a[1:3]))),
            _name("erase", "QAEAAV12@II@Z"): (2, lambda a: s.erase(s._this(), a[0], a[1])),
            _name("c_str", "QBEPBDXZ"): (0, lambda a: s.c_str(s._this())),
            _name("max_size", "QBEIXZ"): (0, lambda a: _NPOS - 2),
            _name("find", "QBEIPBDII@Z"): (3, lambda a: s.find(s._this(), s._read(a[0], a[2]), a[1])),
            _name("rfind", "QBEIPBDII@Z"): (3, lambda a: s.rfind(s._this(), s._read(a[0], a[2]), a[1])),
            _name("substr", "QBE?AV12@II@Z"): (3, lambda a: s.substr(s._this(), *a[:3])),
            "??1" + _STRING + "QAE@XZ": (0, lambda a: s.tidy(s._this(), True)),
            "??0" + _STRING + "QAE@ABV01@@Z": (1, lambda a: s.construct(s._this(), s._text_of(a[0]))),
        }
        out = {("msvcp60", n): (argc, lambda emu, argv, f=f: f(argv)) for n, (argc, f) in members.items()}
        # Free functions (`__cdecl`: nothing popped); their arguments are read from the stack.
        text, read, arg = s._text_of, s._read, s._arg
        free = {
            # operator+(const string&, const char*), (const string&, const string&): a new string
            _free("H", "?AV", "0@ABV10@PBD@Z"): lambda: s.construct(arg(0), text(arg(1)) + read(arg(2))),
            _free("H", "?AV", "0@ABV10@0@Z"): lambda: s.construct(arg(0), text(arg(1)) + text(arg(2))),
            # operator==, != against a C string or a string; operator< of two strings
            _free("8", "_NABV", "0@PBD@Z"): lambda: int(text(arg(0)) == read(arg(1))),
            _free("9", "_NABV", "0@PBD@Z"): lambda: int(text(arg(0)) != read(arg(1))),
            _free("8", "_NABV", "0@0@Z"): lambda: int(text(arg(0)) == text(arg(1))),
            _free("M", "_NABV", "0@0@Z"): lambda: int(text(arg(0)) < text(arg(1))),
        }
        out |= {("msvcp60", name): (0, lambda emu, argv, f=f: f()) for name, f in free.items()}
        return out

    # --- members (Dinkumware's, as VC6 <xstring> defines them) ------------------------------------------
    def tidy(self, this: int, built: int) -> int:
        """_Tidy(built): drop the buffer (one reference of a shared one) when built; zero the fields."""
        ptr = self._u32(this + 4)
        if built and ptr:
            count = self._count(ptr)
            if count not in (0, _FROZEN):
                self.emu.mem_write(ptr - 1, bytes([count - 1]))
        self._set(this, 0, 0, 0)
        return 0

    def copy(self, this: int, length: int) -> int:
        """_Copy(n): a new buffer of `n | _MIN_SIZE` characters holding the old text (cut to fit)."""
        capacity = length | _MIN_SIZE
        if capacity > _NPOS - 2:
            capacity = length
        ptr, old_length = self._u32(this + 4), self._u32(this + 8)
        text = bytes(self.emu.mem_read(ptr, min(old_length, capacity))) if ptr and old_length else b""
        self.tidy(this, True)
        block = self.emu.heap_alloc(capacity + 2, heap="runtrace.msvcp60")
        self.emu.mem_write(block, b"\0" + text + b"\0")
        self._set(this, block + 1, len(text), capacity)
        return 0

    def eos(self, this: int, length: int) -> int:
        self.emu.mem_write(this + 8, length.to_bytes(4, "little"))
        self.emu.mem_write(self._u32(this + 4) + length, b"\0")
        return 0

    def grow(self, this: int, length: int, trim: int) -> int:
        """_Grow(n, trim): an unshared buffer for n characters; false (0) when n is 0."""
        ptr, res = self._u32(this + 4), self._u32(this + 12)
        if ptr and self._count(ptr) not in (0, _FROZEN):
            if length == 0:
                self.tidy(this, True)
                return 0
            self.copy(this, length)
            return 1
        if length == 0:
            if trim:
                self.tidy(this, True)
            elif ptr:
                self.eos(this, 0)
            return 0
        if trim and (res > _MIN_SIZE or res < length):
            self.tidy(this, True)
            self.copy(this, length)
        elif not trim and res < length:
            self.copy(this, length)
        return 1

    def freeze(self, this: int) -> int:
        ptr = self._u32(this + 4)
        if ptr and self._count(ptr) not in (0, _FROZEN):
            self.grow(this, self._u32(this + 8), 0)
            ptr = self._u32(this + 4)
        if ptr:
            self.emu.mem_write(ptr - 1, bytes([_FROZEN]))
        return 0

    def split(self, this: int) -> int:
        ptr = self._u32(this + 4)
        if ptr and self._count(ptr) not in (0, _FROZEN):
            text = self._text_of(this)
            self.tidy(this, True)
            self.assign(this, text)
        return 0

    def assign(self, this: int, text: bytes) -> int:
        if self.grow(this, len(text), 1):
            self.emu.mem_write(self._u32(this + 4), text)
            self.eos(this, len(text))
        return this

    def append(self, this: int, more: bytes) -> int:
        length = self._u32(this + 8)
        if more and self.grow(this, length + len(more), 0):
            self.emu.mem_write(self._u32(this + 4) + length, more)
            self.eos(this, length + len(more))
        return this

    def insert(self, this: int, position: int, more: bytes) -> int:
        text = self._text_of(this)
        if position <= len(text) and more:
            self._replace(this, text[:position] + more + text[position:])
        return this

    def erase(self, this: int, position: int, count: int) -> int:
        text = self._text_of(this)
        if position <= len(text):
            self.split(this)
            self._replace(this, text[:position] + text[position + min(count, len(text) - position) :])
        return this

    def c_str(self, this: int) -> int:
        return self._u32(this + 4) or self._nullstr()

    def find(self, this: int, needle: bytes, start: int) -> int:
        text = self._text_of(this)
        if start > len(text):
            return _NPOS
        found = text.find(needle, start)
        return found if found >= 0 else _NPOS

    def rfind(self, this: int, needle: bytes, start: int) -> int:
        text = self._text_of(this)
        found = text.rfind(needle, 0, min(start, len(text)) + len(needle))
        return found if found >= 0 else _NPOS

    def substr(self, this: int, result: int, position: int, count: int) -> int:
        text = self._text_of(this)
        return self.construct(result, text[position : position + min(count, len(text) - position)])

    def construct(self, this: int, text: bytes) -> int:
        self._set(this, 0, 0, 0)
        self.assign(this, text)
        return this

    # --- helpers --------------------------------------------------------------------------------------
    def _replace(self, this: int, text: bytes) -> None:
        if self.grow(this, len(text), 0):
            self.emu.mem_write(self._u32(this + 4), text)
            self.eos(this, len(text))

    def _part(self, other: int, position: int, count: int) -> bytes:
        """`count` characters of another string from `position` (npos: to its end)."""
        text = self._text_of(other)
        return text[position : position + min(count, max(len(text) - position, 0))]

    def _text_of(self, string: int) -> bytes:
        ptr, length = self._u32(string + 4), self._u32(string + 8)
        return bytes(self.emu.mem_read(ptr, length)) if ptr and length else b""

    def _count(self, ptr: int) -> int:
        return bytes(self.emu.mem_read(ptr - 1, 1))[0]

    def _set(self, this: int, ptr: int, length: int, res: int) -> None:
        self.emu.mem_write(this + 4, b"".join(v.to_bytes(4, "little") for v in (ptr, length, res)))

    def _nullstr(self) -> int:
        return data_export(self.emu, "msvcp60", _NULLSTR) or 0

    def _read(self, address: int, count: int | None = None) -> bytes:
        """`count` characters at `address`, or its NUL-terminated text when count is None."""
        if not address:
            return b""
        if count is not None:
            return bytes(self.emu.mem_read(address, count)) if count else b""
        return c_text(self.emu, address)

    def _this(self) -> int:
        return self.emu.reg_read(se_arch.X86_REG_ECX)

    def _arg(self, index: int) -> int:
        return self._u32(self.emu.get_stack_ptr() + 4 + 4 * index)

    def _u32(self, address: int) -> int:
        return int.from_bytes(bytes(self.emu.mem_read(address, 4)), "little")


_NULLSTR = "?_C@?1??_Nullstr" + _MEMBER + "CAPBDXZ@4DB"
_DATA = {_NULLSTR: b"\0\0\0\0", "?npos" + _MEMBER + "2IB": _NPOS.to_bytes(4, "little")}


def data_export(emu, module: str, name: str, probe: bool = False) -> int | None:
    """Storage for msvcp60's data exports (`npos`, `_Nullstr()`'s empty string), one per emulator;
    with `probe`, only whether the name is one (nothing is allocated)."""
    if not module.lower().startswith("msvcp60") or name not in _DATA:
        return None
    if probe:
        return 1
    stored = emu.__dict__.setdefault("runtrace_msvcp60_data", {})
    if name not in stored:
        stored[name] = emu.mem_map(0x1000, tag="runtrace.msvcp60.data")
        emu.mem_write(stored[name], _DATA[name])
    return stored[name]
