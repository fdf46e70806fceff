"""MFC 4.2's `CString` (mfc42.dll, ANSI), whose members programs import by ordinal.

Stubbed, `CString::CString(LPCSTR)` left the object's one field unset and every use after it read a
garbage pointer: an MFC program faulted (or its exception handler ended the run) within a few dozen
calls of its start, before doing anything.  The class is small and documented by MFC's own sources
(afx.h, strcore.cpp, strex.cpp), and much of it is inline in the program, so the layout must be MFC's:

- a `CString` is one pointer, `m_pchData`, to its characters, which follow a `CStringData` header
  `{long nRefs; int nDataLength; int nAllocLength;}` (12 bytes) in the same block; inline code reads
  the length at `m_pchData - 8`;
- an empty string points at a shared empty block whose `nRefs` is -1 (`afxEmptyString`), never freed;
- copies share a block by reference count (copy-on-write): `CString(const CString&)` and `operator=`
  take another reference unless the source block is locked (`nRefs` < 0); a write (`GetBuffer`, `+=`)
  first makes the block the string's own (`CopyBeforeWrite`);
- release-build `AllocBuffer` rounds a request up to 64, 128, 256 or 512 characters (its fixed-size
  allocators), larger ones are allocated exactly; a buffer always ends in NUL.

MFC42's ordinals follow the alphabetical order of the decorated names, and each one here was checked
against call sites in MFC programs (what is pushed, what is done with the result): 535 copy
constructor, 537 `CString(LPCSTR)`, 540 `CString()`, 800 destructor, 858 `operator=(const CString&)`,
860 `operator=(LPCSTR)`, 939 `operator+=(const CString&)`, 941 `operator+=(LPCSTR)`, 2915
`GetBuffer(int)`, 2919 `GetBufferSetLength(int)`, 4129 `Left(int)`, 5572 `ReleaseBuffer(int)`, 5683
`ReverseFind(TCHAR)`; 823 and 825 are MFC's `operator new`/`operator delete` (cdecl).  Members are
`__thiscall` (`this` in ecx, the callee pops its stack arguments); one returning a `CString` by value
takes the caller's result object as a hidden first argument and returns its address.

Freed blocks are not reused (as the C runtime's `delete` here): the program cannot tell.
"""

from __future__ import annotations

from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate.strings import MAX_TEXT, c_text

_HEADER = 12  # CStringData: nRefs, nDataLength, nAllocLength
_ROUNDED = (64, 128, 256, 512)  # release-build AllocBuffer's fixed-size blocks, in characters


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


class CStrings:
    """mfc42.dll's `CString` members over the emulated memory of one x86 program."""

    def __init__(self, se) -> None:
        self.se = se
        self._nil = 0  # the shared empty string's characters (nRefs -1)

    @property
    def emu(self):
        return self.se.emu

    def handlers(self) -> dict[tuple[str, str], tuple[int, Callable]]:
        """(module, "ordinal_N") -> (stack argument count, handler(emu, argv))."""
        members = {
            535: (1, lambda a: self._init(self._this(), self._chars_of(a[0]), share_from=a[0])),
            537: (1, lambda a: self.construct(a[0])),
            540: (0, lambda a: self._init(self._this(), None)),
            800: (0, lambda a: self.destroy()),
            858: (1, lambda a: self.assign_string(a[0])),
            860: (1, lambda a: self.assign_text(a[0])),
            939: (1, lambda a: self.append(self._text(self._data(a[0])))),
            941: (1, lambda a: self.append(self._text(a[0]))),
            2915: (1, lambda a: self.get_buffer(_s32(a[0]), set_length=False)),
            2919: (1, lambda a: self.get_buffer(_s32(a[0]), set_length=True)),
            4129: (2, lambda a: self.left(a[0], _s32(a[1]))),
            5572: (1, lambda a: self.release_buffer(_s32(a[0]))),
            5683: (1, lambda a: self.reverse_find(a[0] & 0xFF)),
            # operator new / delete are cdecl: nothing popped; the size is read from the stack.
            823: (0, lambda a: self._alloc(max(self._stack_arg(0), 1))),
            825: (0, lambda a: 0),
        }
        return {
            ("mfc42", f"ordinal_{n}"): (argc, lambda emu, argv, f=f: f(argv))
            for n, (argc, f) in members.items()
        }

    # --- members ------------------------------------------------------------------------------------
    def construct(self, text: int) -> int:
        """CString(LPCSTR): a copy of the text; a pointer below 0x10000 is a string resource's id
        (MAKEINTRESOURCE), loaded from the program's string table (empty when it has none)."""
        if text and text < 0x10000:
            return self._init(self._this(), self._resource_string(text).encode("latin-1", "replace"))
        return self._init(self._this(), self._text(text))

    def destroy(self) -> int:
        self._release(self._data(self._this()))
        return 0

    def assign_string(self, other: int) -> int:
        """operator=(const CString&): share the other's block (copy it if it is locked)."""
        this = self._this()
        source, mine = self._data(other), self._data(this)
        if source != mine:
            if self._refs(source) < 0 and source != self._empty():
                self._assign(this, self._chars(source))
            else:
                self._release(mine)
                self._write_u32(this, source)
                if source != self._empty():
                    self._add_ref(source)
        return this

    def assign_text(self, text: int) -> int:
        this = self._this()
        self._assign(this, self._text(text))
        return this

    def append(self, more: bytes) -> int:
        this = self._this()
        if more:
            self._assign(this, self._chars(self._data(this)) + more)
        return this

    def get_buffer(self, minimum: int, set_length: bool) -> int:
        """GetBuffer(n): the string's own writable buffer of at least n characters, its text kept;
        GetBufferSetLength(n) also makes the length n (the text cut or left as it was, NUL at n)."""
        this = self._this()
        data = self._data(this)
        text = self._chars(data)
        if self._refs(data) > 1 or self._alloc_length(data) < minimum:
            self._release(data)
            data = self._new_block(max(minimum, len(text)), text)
            self._write_u32(this, data)
        if set_length:
            self._write_u32(data - 8, minimum)
            self.emu.mem_write(data + minimum, b"\0")
        return data

    def release_buffer(self, length: int) -> int:
        """ReleaseBuffer(n): the length becomes n, or the NUL-terminated text's when n is -1."""
        data = self._data(self._this())
        if data != self._empty():
            if length == -1:
                length = len(self._text(data, self._alloc_length(data)))
            self._write_u32(data - 8, length)
            self.emu.mem_write(data + length, b"\0")
        return 0

    def left(self, result: int, count: int) -> int:
        """Left(n): a new CString of the first n characters (all of them when n is larger)."""
        text = self._chars(self._data(self._this()))
        self._init(result, text[: max(count, 0)])
        return result

    def reverse_find(self, char: int) -> int:
        """ReverseFind(ch): the index of the last ch, -1 when there is none."""
        return self._chars(self._data(self._this())).rfind(bytes([char])) & 0xFFFFFFFF

    # --- CStringData blocks ---------------------------------------------------------------------------
    def _init(self, this: int, text: bytes | None, share_from: int = 0) -> int:
        """Construct the CString at `this`: empty, a copy of `text`, or sharing `share_from`'s block."""
        if share_from:
            source = self._data(share_from)
            if source == self._empty() or self._refs(source) >= 0:
                if source != self._empty():
                    self._add_ref(source)
                self._write_u32(this, source)
                return this
        self._write_u32(this, self._new_block(len(text), text) if text else self._empty())
        return this

    def _assign(self, this: int, text: bytes) -> None:
        """AssignCopy: reuse the string's own block when it is unshared and large enough."""
        data = self._data(this)
        if not text:
            self._release(data)
            self._write_u32(this, self._empty())
        elif data != self._empty() and self._refs(data) <= 1 and self._alloc_length(data) >= len(text):
            self.emu.mem_write(data, text + b"\0")
            self._write_u32(data - 8, len(text))
        else:
            self._release(data)
            self._write_u32(this, self._new_block(len(text), text))

    def _new_block(self, length: int, text: bytes) -> int:
        capacity = next((size for size in _ROUNDED if length <= size), length)
        block = self._alloc(_HEADER + capacity + 1)
        header = (1).to_bytes(4, "little") + len(text).to_bytes(4, "little") + capacity.to_bytes(4, "little")
        self.emu.mem_write(block, header + text + b"\0")
        return block + _HEADER

    def _empty(self) -> int:
        if not self._nil:
            block = self._alloc(_HEADER + 4)
            self.emu.mem_write(block, (0xFFFFFFFF).to_bytes(4, "little") + bytes(_HEADER + 4 - 4))
            self._nil = block + _HEADER
        return self._nil

    def _release(self, data: int) -> None:
        """Drop one reference; a block (never the empty one) whose count reaches 0 is freed."""
        if data and data != self._empty() and self._refs(data) > 0:
            self._write_u32(data - _HEADER, self._refs(data) - 1)

    def _add_ref(self, data: int) -> None:
        self._write_u32(data - _HEADER, self._refs(data) + 1)

    def _refs(self, data: int) -> int:
        return _s32(self._read_u32(data - _HEADER))

    def _alloc_length(self, data: int) -> int:
        return _s32(self._read_u32(data - 4))

    def _chars(self, data: int) -> bytes:
        """A block's text: nDataLength characters."""
        length = _s32(self._read_u32(data - 8))
        return bytes(self.emu.mem_read(data, length)) if length > 0 else b""

    def _chars_of(self, cstring: int) -> bytes:
        return self._chars(self._data(cstring))

    def _data(self, cstring: int) -> int:
        return self._read_u32(cstring)

    # --- memory ------------------------------------------------------------------------------------
    def _this(self) -> int:
        return self.emu.reg_read(se_arch.X86_REG_ECX)

    def _stack_arg(self, index: int) -> int:
        return self._read_u32(self.emu.get_stack_ptr() + 4 + 4 * index)

    def _text(self, address: int, limit: int = MAX_TEXT) -> bytes:
        """The NUL-terminated text at `address` (none for NULL)."""
        return c_text(self.emu, address, limit)

    def _resource_string(self, ident: int) -> str:
        pe = self.emu.modules[0][0] if self.emu.modules else None
        resources = getattr(pe, "DIRECTORY_ENTRY_RESOURCE", None)
        for entry in resources.entries if resources is not None else ():
            if entry.id == 6:  # RT_STRING
                for table in entry.directory.entries:
                    text = table.directory.strings.get(ident)
                    if text is not None:
                        return text
        return ""

    def _alloc(self, size: int) -> int:
        return self.emu.heap_alloc(size, heap="runtrace.mfc")

    def _read_u32(self, address: int) -> int:
        return int.from_bytes(bytes(self.emu.mem_read(address, 4)), "little")

    def _write_u32(self, address: int, value: int) -> None:
        self.emu.mem_write(address, (value & 0xFFFFFFFF).to_bytes(4, "little"))
