"""Initialisation files: `WritePrivateProfileString` and the `Get[Private]Profile*` readers over what the
run wrote and what its emulated files hold (tracer revision 24).

`WritePrivateProfileStringA/W` had no handler: the stub's FALSE told a program that stores its settings
(a bot's identifier, its install time) in an .ini file that the write failed, and 5 malware runs of
about 530 ended early after it at revision 23; a value written was never read back either.  The
readers (`sysapi`'s) answered every key with its default.

Here the writes are kept per file, sections and keys compared without case as Windows compares them;
a read finds a written value, else the file's own text (an .ini file the program dropped or was
given, parsed as the profile functions parse one), else the default.  A file name without a folder
is in the Windows folder, as these functions place it.  The written values are not put back into the
emulated file's bytes.
"""

from __future__ import annotations

import ntpath
from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate import filedata

STDCALL = se_arch.CALL_CONV_STDCALL
WINDOWS = "C:\\Windows"
WIN_INI = "win.ini"  # where the Profile (not PrivateProfile) functions read and write


def parse(text: str) -> dict[str, dict[str, tuple[str, str]]]:
    """An .ini file's sections: {section (lower case): {key (lower case): (key, value)}}, blanks around
    names and values dropped, `;` lines ignored, the first of a repeated key kept."""
    sections: dict[str, dict[str, tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith("[") and "]" in line:
            current = sections.setdefault(line[1 : line.index("]")].strip().lower(), {})
        elif current is not None and "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            current.setdefault(key.lower(), (key, value))
    return sections


class IniFiles:
    def __init__(self, se) -> None:
        self.se = se
        self.written: dict[str, dict[str, dict[str, tuple[str, str] | None]]] = {}  # path -> section -> key

    @property
    def emu(self):
        return self.se.emu

    def simple(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers for APIs Speakeasy has none of: (modules, name, argc, convention, fn(argv))."""
        k32 = ("kernel32", "kernelbase")
        out = []
        for suffix, wide in (("A", False), ("W", True)):
            out += [
                (
                    k32,
                    "WritePrivateProfileString" + suffix,
                    4,
                    STDCALL,
                    lambda a, w=wide: self.write(a, a[3], w),
                ),
                (k32, "WriteProfileString" + suffix, 3, STDCALL, lambda a, w=wide: self.write(a, None, w)),
                (
                    k32,
                    "GetPrivateProfileString" + suffix,
                    6,
                    STDCALL,
                    lambda a, w=wide: self.read(a, a[5], w),
                ),
                (k32, "GetProfileString" + suffix, 5, STDCALL, lambda a, w=wide: self.read(a, None, w)),
                (
                    k32,
                    "GetPrivateProfileInt" + suffix,
                    4,
                    STDCALL,
                    lambda a, w=wide: self.read_int(a, a[3], w),
                ),
                (k32, "GetProfileInt" + suffix, 3, STDCALL, lambda a, w=wide: self.read_int(a, None, w)),
            ]
        return out

    # -- helpers ---------------------------------------------------------------------------------------

    def _text(self, address: int, wide: bool) -> str | None:
        return self.emu.read_mem_string(address, 2 if wide else 1) if address else None

    def _path(self, file_at: int | None, wide: bool) -> str:
        name = self._text(file_at, wide) if file_at else WIN_INI
        name = name or WIN_INI
        return name if ntpath.isabs(name) or name.startswith("\\\\") else ntpath.join(WINDOWS, name)

    def _sections(self, path: str) -> dict[str, dict[str, tuple[str, str]]]:
        """The file's sections as the run sees them: its own text, then what the run wrote over it."""
        data = filedata.file_bytes(self.emu.fileman, path)
        sections = parse(_decode(data)) if data else {}
        for section, keys in self.written.get(filedata.path_key(path), {}).items():
            if "" in keys:  # the section was deleted: only what was written after counts
                sections[section] = {}
            merged = sections.setdefault(section, {})
            for key, entry in keys.items():
                if entry is None:
                    merged.pop(key, None)
                else:
                    merged[key] = entry
            if keys.get("", 0) is None and len(keys) == 1:
                sections.pop(section, None)
        return sections

    # -- handlers --------------------------------------------------------------------------------------

    def write(self, argv: list, file_at: int | None, wide: bool) -> int:
        """Write[Private]ProfileString(section, key, value[, file]): NULL value deletes the key, NULL key
        the section; TRUE."""
        section, key, value = (self._text(a, wide) for a in argv[:3])
        if section is None:
            return 0
        path = self._path(file_at, wide)
        argv[0] = section
        if file_at:
            argv[3] = path
        keys = self.written.setdefault(filedata.path_key(path), {}).setdefault(section.strip().lower(), {})
        if key is None:
            keys.clear()
            keys[""] = None  # the section deleted (what the file held of it is gone)
        else:
            keys[key.strip().lower()] = None if value is None else (key.strip(), value.strip())
        return 1

    def read(self, argv: list, file_at: int | None, wide: bool) -> int:
        """Get[Private]ProfileString(section, key, default, buffer, size[, file]): the value, else the
        default, cut to the buffer; NULL section lists the sections, NULL key the section's keys (each
        NUL-terminated, then a NUL)."""
        section, key = self._text(argv[0], wide), self._text(argv[1], wide)
        default, buffer, size = self._text(argv[2], wide) or "", argv[3], argv[4] & 0xFFFFFFFF
        sections = self._sections(self._path(file_at, wide))
        if section is None:
            return self._write_list(list(sections), buffer, size, wide)
        keys = sections.get(section.strip().lower(), {})
        if key is None:
            return self._write_list([k for k, _ in keys.values()], buffer, size, wide)
        entry = keys.get(key.strip().lower())
        text = entry[1] if entry is not None else default.strip(" ")
        if not buffer or not size:
            return 0
        copied = text[: size - 1]
        self.emu.mem_write(buffer, (copied + "\0").encode("utf-16-le" if wide else "latin-1", "replace"))
        return len(copied)

    def _write_list(self, names: list[str], buffer: int, size: int, wide: bool) -> int:
        """Names each NUL-terminated, then a NUL, cut to fit as Windows cuts them; size - 2 when cut."""
        if not buffer or size < 2:
            return 0
        text = "".join(name + "\0" for name in names)
        cut = len(text) > size - 1
        text = text[: size - 2] + "\0" if cut else text
        self.emu.mem_write(buffer, (text + "\0").encode("utf-16-le" if wide else "latin-1", "replace"))
        return size - 2 if cut else len(text)

    def read_int(self, argv: list, file_at: int | None, wide: bool) -> int:
        """Get[Private]ProfileInt(section, key, default[, file]): the value's leading digits, else the
        default."""
        section, key, default = self._text(argv[0], wide), self._text(argv[1], wide), argv[2] & 0xFFFFFFFF
        if section is None or key is None:
            return default
        entry = (
            self._sections(self._path(file_at, wide))
            .get(section.strip().lower(), {})
            .get(key.strip().lower())
        )
        if entry is None:
            return default
        digits = entry[1][1:] if entry[1][:1] in "+-" else entry[1]
        digits = digits[: next((i for i, c in enumerate(digits) if not c.isdigit()), len(digits))]
        value = int(digits) if digits else 0
        return (-value if entry[1].startswith("-") else value) & 0xFFFFFFFF


def _decode(data: bytes) -> str:
    if data[:2] == b"\xff\xfe":
        return data[2:].decode("utf-16-le", "replace")
    return data.decode("latin-1")
