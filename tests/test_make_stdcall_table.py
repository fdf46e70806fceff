"""scripts/make_stdcall_table.py: sizes from the symbol index of GNU ar import libraries."""

from __future__ import annotations

import gzip
import struct

from script_support import load_script

tool = load_script("make_stdcall_table")


def _archive(symbols: list[str]) -> bytes:
    """A GNU ar archive holding only its symbol index (member "/"), as binutils writes it."""
    names = b"".join(s.encode() + b"\0" for s in symbols)
    index = struct.pack(">I", len(symbols)) + struct.pack(f">{len(symbols)}I", *[0] * len(symbols)) + names
    header = b"/".ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"0".ljust(8)
    header += str(len(index)).encode().ljust(10) + b"`\n"
    return b"!<arch>\n" + header + index


def test_the_index_of_an_import_library_is_read():
    symbols = ["__head_libkernel32_a", "_SetFileAttributesA@8", "__imp__SetFileAttributesA@8"]
    assert tool.ar_index(_archive(symbols)) == symbols
    assert tool.ar_index(b"!<arch>\n" + b"libfoo.o/".ljust(60)) == []  # no index member first
    assert tool.ar_index(b"not an archive") == []


def test_sizes_agree_by_name_and_differ_by_dll():
    libraries = [
        ("kernel32", ["__head_libkernel32_a", "_SetFileAttributesA@8", "__imp__SetFileAttributesA@8",
                      "_Sleep@4", "_wsprintfA", "@FastCall@8"]),
        ("mincore", ["_SetFileAttributesA@8", "_Shared@4"]),
        ("gdi32", ["_Shared@8"]),
    ]  # fmt: skip
    assert tool.table(libraries) == {
        "SetFileAttributesA": 8,  # every library agrees: by name
        "Sleep": 4,
        "mincore!Shared": 4,  # they differ: per DLL
        "gdi32!Shared": 8,
    }  # cdecl (no size), fastcall and the import thunks' own symbols are not stdcall APIs


def test_the_table_and_the_dll_names_are_written(tmp_path, monkeypatch):
    libraries = [("version", ["_GetFileVersionInfoSizeA@8"]), ("mpr", ["_WNetOpenEnumA@20"])]
    monkeypatch.setattr(tool, "import_libraries", lambda deb: iter(libraries))
    deb = tmp_path / "package.deb"
    deb.write_bytes(b"not read: import_libraries is replaced")
    out = tmp_path / "data" / "arguments.tsv.gz"
    tool.main([str(deb), "-o", str(out)])
    assert gzip.decompress(out.read_bytes()).decode() == "GetFileVersionInfoSizeA\t8\nWNetOpenEnumA\t20\n"
    assert (out.parent / "libraries.txt").read_text() == "mpr\nversion\n"
