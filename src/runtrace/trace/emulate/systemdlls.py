"""The system DLLs a program may load at run time, where Speakeasy has no module of that name.

Speakeasy's `LoadLibrary` finds only the DLLs of its configuration (about 40 decoys), so `version.dll`,
`mpr.dll` or `uxtheme.dll` loaded by name failed: the program got NULL, called `GetProcAddress(NULL, ...)`
and, like most programs whose system DLL is missing, exited.  Over the era corpus at tracer revision 21,
58 malicious runs that ended with fewer than 1,000 API calls had failed to load `version.dll` and 23
`mpr.dll` (no benign run had).

A DLL named here loads as Speakeasy loads a module it does not know when told that every module exists:
a decoy whose exports `GetProcAddress` resolves to its handlers or to the tracer's stubs.  The names are
those of MinGW-w64's import libraries (`src/runtrace/data/stdcall/libraries.txt`, written with the
stdcall table: a Windows DLL has an import library because programs link it), less MinGW's own and its
umbrella libraries, and a few system DLLs that programs only ever load by name, so have none.  A DLL not
named here still fails to load, as a program's missing plug-in or a sandbox probe's made-up name should.
"""

from __future__ import annotations

import functools
import ntpath

from runtrace.paths import data_dir

# MinGW's own libraries and umbrella libraries (several DLLs' imports under one name): no DLL of that name.
_NOT_DLLS = frozenset(
    {"mincore", "windowsapp", "ucrtapp", "msvcrt-os", "ntdllcrt", "pthread.dll", "winpthread.dll"}
    | {"msvcp120_app", "msvcr120_app", "vcruntime140_app"}
)
# In system32 of every Windows 10, without an import library: loaded by name for their window classes
# (rich edit controls) or their exports found with GetProcAddress.
_LOADED_BY_NAME = frozenset({"riched20", "riched32", "msftedit", "sfc_os", "rsaenh", "cryptbase"})
_SYSTEM_FOLDERS = ("c:\\windows\\system32", "c:\\windows\\syswow64", "c:\\windows")


@functools.cache
def names() -> frozenset[str]:
    text = (data_dir() / "stdcall" / "libraries.txt").read_text(encoding="ascii")
    return frozenset(text.split()) - _NOT_DLLS | _LOADED_BY_NAME


def is_system_dll(name: str) -> bool:
    """True for a system DLL's name as a program passes it to `LoadLibrary`: bare (`VERSION.dll`,
    `mpr`) or in the system folder."""
    name = name.strip().strip('"').lower()
    folder, base = ntpath.split(name)
    stem, extension = ntpath.splitext(base)
    if extension not in ("", ".dll") or (folder and folder.rstrip("\\") not in _SYSTEM_FOLDERS):
        return False
    return stem in names()
