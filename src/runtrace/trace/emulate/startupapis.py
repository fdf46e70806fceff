"""APIs a program's runtime calls while starting up, which the generic stub (0, nothing written) answered
as failures Windows never gives there (tracer revision 22).

Counted over the corpus's malware runs that ended under 1,000 API calls or early:
- `CompareStringA/W`: Delphi's `AnsiCompareText` is `CompareString(...) - 2`; with 0 no two names were
  ever equal, the form streaming system found no registered class ("Class %s not found") and the
  program ended with an exception.
- `GetProcessAffinityMask`, `GlobalMemoryStatusEx`: runtimes size thread pools and heaps from them;
  the stub wrote no mask and no sizes (a .NET host among the short runs still ends dividing by zero,
  for another reason not yet found).
- `GlobalAddAtomA/W` (and Find/Delete), `RegisterClipboardFormatA/W`: Delphi's VCL keys the window
  properties that map a window to its control on an atom; 0 is no atom.

The machine has 4 processors and 8 GiB (`sysapi.map_user_shared_data` says so in KUSER_SHARED_DATA).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate.apigroup import ApiGroup

STDCALL = se_arch.CALL_CONV_STDCALL
PROCESSORS = 4
GIB = 1 << 30
MEMORY = 8 * GIB
ERROR_INVALID_PARAMETER = 87
ERROR_FILE_NOT_FOUND = 2
MAXINTATOM = 0xC000
# CompareString's flags that change what is compared; others (SORT_STRINGSORT, NORM_IGNOREKANATYPE,
# NORM_IGNOREWIDTH) make no difference to Latin text.
NORM_IGNORECASE = 0x1
NORM_IGNORENONSPACE = 0x2
NORM_IGNORESYMBOLS = 0x4
LINGUISTIC_IGNORECASE = 0x10
CSTR_LESS_THAN, CSTR_EQUAL, CSTR_GREATER_THAN = 1, 2, 3


class AtomTable:
    """A string atom table: atoms from 0xC000 up, names matched without regard to case, each with a
    reference count as Windows keeps one."""

    def __init__(self) -> None:
        self.atoms: dict[str, list] = {}  # lowercased name -> [atom, references]
        self.next = MAXINTATOM

    def add(self, name: str) -> int:
        entry = self.atoms.get(name.lower())
        if entry is None:
            if self.next > 0xFFFF:
                return 0
            entry = self.atoms[name.lower()] = [self.next, 0]
            self.next += 1
        entry[1] += 1
        return entry[0]

    def find(self, name: str) -> int:
        entry = self.atoms.get(name.lower())
        return entry[0] if entry else 0

    def delete(self, atom: int) -> bool:
        for key, entry in self.atoms.items():
            if entry[0] == atom:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self.atoms[key]
                return True
        return False


def compare_strings(a: str, b: str, flags: int) -> int:
    """CompareString's answer (1 less, 2 equal, 3 greater) for two decoded strings.  Windows sorts
    linguistically: letters compare without their case first, and only text equal but for case puts
    lower case before upper case; NUL characters are ignorable.  Symbol and accent folding are done
    only as far as the flags ask and Python can (dropping non-alphanumerics, stripping combining marks)."""

    def fold(s: str) -> str:
        s = s.replace("\0", "")
        if flags & NORM_IGNORENONSPACE:
            s = "".join(c for c in unicodedata.normalize("NFD", s) if not unicodedata.combining(c))
        if flags & NORM_IGNORESYMBOLS:
            s = "".join(c for c in s if c.isalnum())
        return s

    a, b = fold(a), fold(b)
    primary_a, primary_b = a.casefold(), b.casefold()
    if primary_a != primary_b:
        return CSTR_LESS_THAN if primary_a < primary_b else CSTR_GREATER_THAN
    if flags & (NORM_IGNORECASE | LINGUISTIC_IGNORECASE) or a == b:
        return CSTR_EQUAL
    # Equal but for case: the first difference decides, lower case first.
    for x, y in zip(a, b, strict=False):
        if x != y:
            return CSTR_LESS_THAN if x.islower() else CSTR_GREATER_THAN
    return CSTR_EQUAL


class StartupApis(ApiGroup):
    def __init__(self, se, ptr: int) -> None:
        super().__init__(se, ptr)
        self.global_atoms = AtomTable()
        self.clipboard_formats = AtomTable()

    def simple(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers for APIs Speakeasy has none of: (modules, name, argc, convention, fn(argv))."""
        k32 = ("kernel32", "kernelbase")
        out = [
            (k32, "GetProcessAffinityMask", 3, STDCALL, self.process_affinity_mask),
            (k32, "GlobalMemoryStatusEx", 1, STDCALL, self.memory_status_ex),
        ]
        for suffix, wide in (("A", False), ("W", True)):
            out += [
                (k32, "CompareString" + suffix, 6, STDCALL, lambda a, w=wide: self.compare_string(a, w)),
                (k32, "GlobalAddAtom" + suffix, 1, STDCALL, lambda a, w=wide: self.add_atom(a, w)),
                (k32, "GlobalFindAtom" + suffix, 1, STDCALL, lambda a, w=wide: self.find_atom(a, w)),
                (
                    ("user32",),
                    "RegisterClipboardFormat" + suffix,
                    1,
                    STDCALL,
                    lambda a, w=wide: self.register_clipboard_format(a, w),
                ),
            ]
        out.append((k32, "GlobalDeleteAtom", 1, STDCALL, self.delete_atom))
        return out

    # -- handlers --------------------------------------------------------------------------------------

    def compare_string(self, argv: list, wide: bool) -> int:
        """CompareString(Locale, dwCmpFlags, lpString1, cchCount1, lpString2, cchCount2): a negative
        count means the string ends at its NUL; a NULL string is ERROR_INVALID_PARAMETER."""
        _locale, flags, p1, n1, p2, n2 = argv[:6]
        if not p1 or not p2:
            self.emu.set_last_error(ERROR_INVALID_PARAMETER)
            return 0
        s1, s2 = self._counted(p1, n1, wide), self._counted(p2, n2, wide)
        argv[2], argv[4] = s1, s2
        return compare_strings(s1, s2, flags)

    def process_affinity_mask(self, argv: list) -> int:
        """GetProcessAffinityMask(hProcess, lpProcessAffinityMask, lpSystemAffinityMask): every
        processor of the machine for both."""
        _process, process_mask, system_mask = argv[:3]
        if not process_mask or not system_mask:
            self.emu.set_last_error(ERROR_INVALID_PARAMETER)
            return 0
        mask = ((1 << PROCESSORS) - 1).to_bytes(self.ptr, "little")
        self.emu.mem_write(process_mask, mask)
        self.emu.mem_write(system_mask, mask)
        return 1

    def memory_status_ex(self, argv: list) -> int:
        """GlobalMemoryStatusEx(lpBuffer): MEMORYSTATUSEX, whose dwLength the caller sets to its size
        (64; anything else is ERROR_INVALID_PARAMETER): half of the 8 GiB in use, a page file as large
        again, and the user address space of the program's width."""
        buffer = argv[0]
        if not buffer or int.from_bytes(bytes(self.emu.mem_read(buffer, 4)), "little") != 64:
            self.emu.set_last_error(ERROR_INVALID_PARAMETER)
            return 0
        user_space = 0x7FFE0000 if self.ptr == 4 else 0x7FFFFFFE0000
        values = (MEMORY, MEMORY // 2, 2 * MEMORY, MEMORY, user_space, user_space - 256 * (1 << 20), 0)
        data = (64).to_bytes(4, "little") + (50).to_bytes(4, "little")
        data += b"".join(v.to_bytes(8, "little") for v in values)
        self.emu.mem_write(buffer, data)
        return 1

    def add_atom(self, argv: list, wide: bool) -> int:
        """GlobalAddAtom(lpString): an integer atom (MAKEINTATOM or "#123") is its own value; a name
        gets its atom, the same one again for the same name in any case."""
        value = self._atom_argument(argv, wide)
        if isinstance(value, int):
            return value
        return self.global_atoms.add(value)

    def find_atom(self, argv: list, wide: bool) -> int:
        value = self._atom_argument(argv, wide)
        if isinstance(value, int):
            return value
        atom = self.global_atoms.find(value)
        if not atom:
            self.emu.set_last_error(ERROR_FILE_NOT_FOUND)
        return atom

    def delete_atom(self, argv: list) -> int:
        """GlobalDeleteAtom(nAtom): 0 on success, the atom back when it was not there."""
        atom = argv[0] & 0xFFFF
        if atom < MAXINTATOM or self.global_atoms.delete(atom):
            return 0
        return atom

    def register_clipboard_format(self, argv: list, wide: bool) -> int:
        """RegisterClipboardFormat(lpszFormat): a format in 0xC000-0xFFFF, the same for the same name."""
        name = self._string(argv[0], wide)
        argv[0] = name
        if not name:
            self.emu.set_last_error(ERROR_INVALID_PARAMETER)
            return 0
        return self.clipboard_formats.add(name)

    # -- helpers ---------------------------------------------------------------------------------------

    def _atom_argument(self, argv: list, wide: bool) -> int | str:
        """The atom an integer-atom argument stands for (0 for an invalid one), else the name."""
        pointer = argv[0]
        if pointer < 0x10000:  # MAKEINTATOM
            return pointer if 0 < pointer < MAXINTATOM else 0
        name = self._string(pointer, wide)
        argv[0] = name
        if name.startswith("#") and name[1:].isdigit():
            number = int(name[1:])
            return number if 0 < number < MAXINTATOM else 0
        if not name or len(name) > 255:
            self.emu.set_last_error(ERROR_INVALID_PARAMETER)
            return 0
        return name

    def _counted(self, address: int, count: int, wide: bool) -> str:
        count &= 0xFFFFFFFF  # an int: on amd64 the register's upper half is not the caller's
        count = count if count < 0x80000000 else count - (1 << 32)
        if count < 0:
            return self._string(address, wide)
        width = 2 if wide else 1
        data = bytes(self.emu.mem_read(address, count * width)) if count else b""
        return data.decode("utf-16-le" if wide else "cp1252", errors="replace")

    def _string(self, address: int, wide: bool) -> str:
        return self.emu.read_mem_string(address, 2 if wide else 1) if address else ""
