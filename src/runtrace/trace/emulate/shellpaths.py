"""shlwapi's path functions Speakeasy has no handler for (tracer revision 24).

A program building the path of its installed copy or its data file (`GetSystemDirectory`, then
`PathAddBackslash`, `PathAppend`, `PathFileExists`) met stubs: `PathAddBackslash` added nothing and
answered NULL, `PathFileExists` said "no" whatever the emulated file system held, and
`PathRemoveFileSpec` left the file name on the folder it wanted.  These edit the caller's buffer in
place, as Windows does, and look files up in the run's emulated file system (`filedata.exists`).
Paths are at most MAX_PATH characters, as these (non-`Cch`) functions assume.
"""

from __future__ import annotations

import ntpath
from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate import filedata
from runtrace.trace.emulate.apigroup import ApiGroup

STDCALL = se_arch.CALL_CONV_STDCALL
MAX_PATH = 260
FILE_ATTRIBUTE_DIRECTORY = 0x10


def _is_root(path: str) -> bool:
    """ "C:\\", "\\", or a UNC share's root ("\\\\server\\share")."""
    if path in ("\\",) or (len(path) == 3 and path[1:] == ":\\"):
        return True
    return path.startswith("\\\\") and path.rstrip("\\").count("\\") <= 3


def remove_file_spec(path: str) -> str:
    """PathRemoveFileSpec: the folder part ("C:\\a\\b.exe" -> "C:\\a", "C:\\b.exe" -> "C:\\")."""
    cut = path.rfind("\\")
    if cut < 0:
        return path[:2] if path[1:2] == ":" else ""
    if cut == 0 or (cut == 2 and path[1] == ":"):
        return path[: cut + 1]
    return path[:cut]


def combine(folder: str, more: str) -> str:
    """PathCombine: `more` alone when it is absolute, else joined to `folder`, "." and ".." resolved."""
    if more[1:3] == ":\\" or more.startswith("\\\\"):
        joined = more
    elif more.startswith("\\"):
        joined = folder[:2] + more if folder[1:2] == ":" else more
    elif not folder:
        joined = more
    else:
        joined = folder.rstrip("\\") + "\\" + more if more else folder
    return ntpath.normpath(joined) if joined else joined


def get_args(path: str) -> int:
    """PathGetArgs: the index where the arguments start (after the first space outside quotes), or the
    end of the text."""
    quoted = False
    for i, char in enumerate(path):
        if char == '"':
            quoted = not quoted
        elif char == " " and not quoted:
            return i + 1
    return len(path)


class ShellPaths(ApiGroup):
    def simple(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers for APIs Speakeasy has none of: (modules, name, argc, convention, fn(argv))."""
        out = []
        for suffix, wide in (("A", False), ("W", True)):
            out += [
                (name + suffix, argc, lambda a, fn=fn, w=wide: fn(a, w))
                for name, argc, fn in (
                    ("PathFileExists", 1, self.file_exists),
                    ("PathIsDirectory", 1, self.is_directory),
                    ("PathAddBackslash", 1, self.add_backslash),
                    ("PathRemoveBackslash", 1, self.remove_backslash),
                    ("PathRemoveFileSpec", 1, self.remove_file_spec),
                    ("PathCombine", 3, self.combine),
                    ("PathRenameExtension", 2, self.rename_extension),
                    ("PathUnquoteSpaces", 1, self.unquote_spaces),
                    ("PathQuoteSpaces", 1, self.quote_spaces),
                    ("PathGetArgs", 1, self.get_args),
                    ("PathRemoveArgs", 1, self.remove_args),
                )
            ]
        return [(("shlwapi",), name, argc, STDCALL, fn) for name, argc, fn in out]

    # -- helpers ---------------------------------------------------------------------------------------

    def _read(self, address: int, wide: bool) -> str:
        return self.emu.read_mem_string(address, 2 if wide else 1, max_chars=MAX_PATH) if address else ""

    def _write(self, address: int, text: str, wide: bool) -> None:
        data = text.encode("utf-16-le" if wide else "latin-1", "replace") + bytes(2 if wide else 1)
        self.emu.mem_write(address, data)

    @staticmethod
    def _at(address: int, index: int, wide: bool) -> int:
        return address + index * (2 if wide else 1)

    # -- handlers --------------------------------------------------------------------------------------

    def file_exists(self, argv: list, wide: bool) -> int:
        path = self._read(argv[0], wide)
        argv[0] = path
        return int(filedata.exists(self.emu, path))

    def is_directory(self, argv: list, wide: bool) -> int:
        path = self._read(argv[0], wide)
        argv[0] = path
        return FILE_ATTRIBUTE_DIRECTORY if path and filedata.is_folder(self.emu, path) else 0

    def add_backslash(self, argv: list, wide: bool) -> int:
        """The address of the path's end (its NUL) after a backslash is added where there was none;
        NULL when the result would not fit in MAX_PATH."""
        address = argv[0]
        path = self._read(address, wide)
        argv[0] = path
        if path and not path.endswith("\\"):
            if len(path) + 1 >= MAX_PATH:
                return 0
            path += "\\"
            self._write(address, path, wide)
        return self._at(address, len(path), wide)

    def remove_backslash(self, argv: list, wide: bool) -> int:
        """The address of the NUL where a trailing backslash was removed, else of the last character."""
        address = argv[0]
        path = self._read(address, wide)
        if path.endswith("\\") and not _is_root(path):
            path = path[:-1]
            self._write(address, path, wide)
            return self._at(address, len(path), wide)
        return self._at(address, max(len(path) - 1, 0), wide)

    def remove_file_spec(self, argv: list, wide: bool) -> int:
        address = argv[0]
        path = self._read(address, wide)
        folder = remove_file_spec(path)
        if folder == path:
            return 0
        self._write(address, folder, wide)
        return 1

    def combine(self, argv: list, wide: bool) -> int:
        """PathCombine(destination, folder, file): the destination, or NULL for no result or one longer
        than MAX_PATH."""
        destination, folder_at, more_at = argv[:3]
        folder, more = self._read(folder_at, wide), self._read(more_at, wide)
        if not destination or (not folder_at and not more_at):
            return 0
        joined = combine(folder, more)
        if len(joined) >= MAX_PATH:
            self._write(destination, "", wide)
            return 0
        self._write(destination, joined, wide)
        argv[0] = joined
        return destination

    def rename_extension(self, argv: list, wide: bool) -> int:
        address, extension_at = argv[:2]
        path, extension = self._read(address, wide), self._read(extension_at, wide)
        stem = ntpath.splitext(path)[0] if ntpath.splitext(path)[1] else path
        if len(stem + extension) >= MAX_PATH:
            return 0
        self._write(address, stem + extension, wide)
        return 1

    def unquote_spaces(self, argv: list, wide: bool) -> int:
        path = self._read(argv[0], wide)
        if len(path) >= 2 and path[0] == path[-1] == '"':
            self._write(argv[0], path[1:-1], wide)
            return 1
        return 0

    def quote_spaces(self, argv: list, wide: bool) -> int:
        path = self._read(argv[0], wide)
        if " " in path and not path.startswith('"') and len(path) + 2 < MAX_PATH:
            self._write(argv[0], f'"{path}"', wide)
            return 1
        return 0

    def get_args(self, argv: list, wide: bool) -> int:
        return self._at(argv[0], get_args(self._read(argv[0], wide)), wide)

    def remove_args(self, argv: list, wide: bool) -> int:
        path = self._read(argv[0], wide)
        start = get_args(path)
        if start < len(path):
            self._write(argv[0], path[:start].rstrip(" "), wide)
        return 0
