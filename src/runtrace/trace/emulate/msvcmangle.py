"""How many bytes of arguments an x86 C++ function pops, read from its Visual C++ mangled name.

A stubbed API pops no arguments: nothing says how many a plain C export takes.  A C++ export's
mangled name does say it: `?_Tidy@?$basic_string@D...@std@@AAEX_N@Z` is a private (`A`) member of
`basic_string<char>` with an unqualified `this` (`A`), called `__thiscall` (`E`), returning `void`
(`X`) and taking one `bool` (`_N`).  The callee pops its stack arguments in `__thiscall` and
`__stdcall` (`this` is in ecx, not on the stack); in `__cdecl` the caller does.  Stubbed as if they
took none, every `msvcp60` member with parameters an old Visual C++ program called (`_Tidy`, `_Copy`,
`_Grow`) left its arguments on the stack and the caller's frame was 4 or 8 bytes off.

The parser reads what the stack slots need, not the full type grammar: functions (global, static and
member), their calling convention and their parameter types, templates and back-references included.
A name it cannot read gives None (the stub then pops nothing, as before); so does a parameter passed
by value whose size the name cannot tell (a class or struct).
"""

from __future__ import annotations

# Access/storage codes of a function's type: member functions with a `this` (then its cv qualifier),
# static members and global functions (none).  Virtual-adjustor thunks (`$`-codes) are not read.
_MEMBER = set("ABEFIJMNQRUV")
_STATIC_OR_GLOBAL = set("CDKLSTYZ")
_POPS = {"E": True, "G": True, "A": False, "I": True}  # thiscall, stdcall, cdecl, fastcall (see below)
_SIMPLE_4 = set("CDEFGHIJKM")  # char .. unsigned long, float: one 4-byte slot
_EXTENDED_4 = set("NW")  # _N bool, _W wchar_t
_EXTENDED_8 = set("JK")  # _J __int64, _K unsigned __int64
_CV = set("ABCD")


class _Unreadable(ValueError):
    pass


class _Reader:
    def __init__(self, text: str) -> None:
        self.s, self.i = text, 0
        # The slots of the parameter types a back-reference (0-9) names: those written with more
        # than one character, in order.
        self.backrefs: list[int | None] = []

    def peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def take(self, n: int = 1) -> str:
        if self.i + n > len(self.s):
            raise _Unreadable(self.s)
        out = self.s[self.i : self.i + n]
        self.i += n
        return out

    # --- names ---------------------------------------------------------------------------------------
    def fragment(self) -> None:
        """One name fragment: `name@`, a back-reference digit, or a template `?$name@args@`."""
        c = self.peek()
        if c.isdigit():
            self.take()
        elif self.peek(2) == "?$":
            self.take(2)
            self.fragment_text()
            self.template_arguments()
        elif c == "?":  # a nested special name (`?A0x...` anonymous namespace, `??0` inside a template)
            self.take()
            if self.peek() == "?":
                raise _Unreadable(self.s)
            self.fragment_text()
        else:
            self.fragment_text()

    def fragment_text(self) -> None:
        end = self.s.find("@", self.i)
        if end < 0:
            raise _Unreadable(self.s)
        self.i = end + 1

    def qualified_name(self) -> None:
        """Fragments up to the closing `@`."""
        while self.peek() != "@":
            if not self.peek():
                raise _Unreadable(self.s)
            self.fragment()
        self.take()

    def template_arguments(self) -> None:
        while self.peek() != "@":
            if not self.peek():
                raise _Unreadable(self.s)
            if self.peek() == "$":  # a non-type argument: `$0` number, `$1` address, ...
                self.take()
                kind = self.take()
                if kind == "0":
                    self.number()
                elif kind == "1":
                    self.symbol()
                elif kind == "$":  # `$$C`, `$$V`, ... a modifier before a type, or an empty pack
                    code = self.take()
                    if code in "CAB":
                        self.type()
                else:
                    raise _Unreadable(self.s)
            else:
                self.type()
        self.take()

    def number(self) -> None:
        if self.peek() == "?":
            self.take()
        if self.peek().isdigit():
            self.take()
            return
        while self.take() != "@":
            pass

    def symbol(self) -> None:
        if self.take() != "?":
            raise _Unreadable(self.s)
        self.qualified_name()
        self.function_or_data_type()

    def function_or_data_type(self) -> None:
        code = self.take()
        if code in "0123":  # data: type then cv
            self.type()
            self.take()
        elif code in _MEMBER:
            self.take()
            self.function_type()
        elif code in _STATIC_OR_GLOBAL:
            self.function_type()
        else:
            raise _Unreadable(self.s)

    # --- types ---------------------------------------------------------------------------------------
    def type(self) -> int | None:
        """Read one type; its stack slots when passed by value (None: a size the name does not give)."""
        c = self.take()
        if c.isdigit():  # a back-reference to an earlier parameter type
            index = int(c)
            return self.backrefs[index] if index < len(self.backrefs) else None
        return self._type_body(c)

    def _type_body(self, c: str) -> int | None:
        if c in _SIMPLE_4:
            return 1
        if c in "NO":  # double, long double (Visual C++: 8 bytes)
            return 2
        if c == "X":
            return 0
        if c == "_":
            e = self.take()
            if e in _EXTENDED_4:
                return 1
            if e in _EXTENDED_8:
                return 2
            if e in "SU":  # char16_t, char32_t
                return 1
            raise _Unreadable(self.s)
        if c in "PQRSA":  # pointer (const/volatile), reference
            if self.peek() == "E":  # __ptr64
                self.take()
            if self.peek() == "6":  # pointer to function
                self.take()
                self.function_type()
                return 1
            if self.take() not in _CV:
                raise _Unreadable(self.s)
            self.type()
            return 1
        if c == "$" and self.peek(2) == "$Q":  # rvalue reference
            self.take(2)
            if self.take() not in _CV:
                raise _Unreadable(self.s)
            self.type()
            return 1
        if c in "TUV":  # union, struct, class by value: its size is not in the name
            self.qualified_name()
            return None
        if c == "W":  # enum: `W4` is an int
            self.take()
            self.qualified_name()
            return 1
        raise _Unreadable(self.s)

    def function_type(self) -> tuple[str, list[int | None]]:
        """[this cv,] calling convention, return type, parameters, throw spec: (convention, slots)."""
        convention = self.take()
        if convention not in _POPS:
            raise _Unreadable(self.s)
        if self.peek(2) in ("?A", "?B"):  # a class returned by value (hidden pointer; caller pops it)
            self.take(2)
        if self.peek() == "@":  # constructors and destructors have no return type
            self.take()
        else:
            self.type()
        params: list[int | None] = []
        while True:
            c = self.peek()
            if c in ("@", "Z") and params:
                self.take()
                break
            if c == "X" and not params:  # (void)
                self.take()
                break
            if c == "Z" and not params:  # (...)
                self.take()
                break
            if not c:
                raise _Unreadable(self.s)
            start = self.i
            slots = self.type()
            if self.i - start > 1:
                self.backrefs.append(slots)
            params.append(slots)
        self.take()  # the throw specification, `Z`
        return convention, params


def popped_bytes(name: str) -> int | None:
    """The bytes of stack arguments an x86 function pops on return, from its mangled name: 0 for
    `__cdecl`, the parameters' slots for `__stdcall` and `__thiscall`; None when the name is not a
    mangled function name this reads, or a parameter's size is not in it."""
    if not name.startswith("?") or name.startswith("??_"):  # (`??_7` vtables, `??_G` deleting dtors...)
        return None
    reader = _Reader(name)
    try:
        reader.take()
        if reader.peek() == "?":  # an operator or special member: `??0` constructor, `??6` operator<<
            reader.take()
            code = reader.take()
            if code == "$":  # a function template: `??$name@args@`
                reader.fragment_text()
                reader.template_arguments()
        else:
            reader.fragment()
        reader.qualified_name()
        code = reader.take()
        if code in _MEMBER:
            if reader.peek() == "E":  # __ptr64 this
                reader.take()
            if reader.take() not in _CV:
                return None
        elif code not in _STATIC_OR_GLOBAL:
            return None
        convention, params = reader.function_type()
    except (_Unreadable, IndexError):
        return None
    if reader.i != len(name):
        return None
    if not _POPS[convention]:
        return 0
    if convention == "I":  # __fastcall: the first two 4-byte arguments travel in ecx and edx
        return None
    if any(p is None for p in params):
        return None
    return 4 * sum(params)
