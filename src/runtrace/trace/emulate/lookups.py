"""Speakeasy's lookups that run on every API call, indexed: the same answers, without the linear scans.

Profiled with cProfile over 120 files of the corpus (60 malicious, 60 benign; tracer revision 24), three
of Speakeasy's own lookups took a fifth of the tracer's time, each growing with the run:

- `MemoryManager.get_address_map` walks the list of every memory map the run made (each heap block is
  one) to find the map holding an address, and every API handler's `mem_write` asks it: 14 % of the
  time, 0.3 ms a call in runs with thousands of heap blocks.  Here the maps are kept sorted by base
  beside Speakeasy's list (which stays as it is: other code iterates it), and the lookup is a bisection.
  Speakeasy answers with the first map in list order that holds the address; that is the only one
  while maps do not overlap, which the index checks as maps are added: should two ever overlap, the
  lookup is Speakeasy's own scan again until they no longer do.
- `WindowsApi.load_api_handler` lower-cases the names of all of Speakeasy's ~60 handler modules on every
  call that names a module it has no handler for (MFC, the Visual Basic runtime, any third-party DLL),
  and `get_export_func_handler` asks it on every API call whose module name differs in case from the
  handler's: 7 %.  Its answer for a name never changes (the handler list is fixed at import; a handler
  once made is the one kept), so it is remembered per name.
- `PeFile._get_pe_exports` builds a new `namedtuple` class, with `eval`, for every export of every
  module mapped: 2 %.  Replaced by one small class with the same four attributes.

The traces are the same to the byte (`docs/tracer.md`, "Indexed lookups"); only the time changes.
"""

from __future__ import annotations  # noqa: I001  (speakeasy_loader must come before speakeasy)

import bisect

from runtrace.trace.emulate import speakeasy_loader  # noqa: F401  (first: lean imports of speakeasy)
from speakeasy.windows.common import PeFile


class _SortedMaps:
    """Memory maps sorted by base address, for the lookup; `overlapping` when two of them overlap."""

    def __init__(self, maps) -> None:
        self.rebuild(maps)

    def rebuild(self, maps) -> None:
        ordered = sorted((m for m in maps if m.size > 0), key=lambda m: m.base)
        self.bases = [m.base for m in ordered]
        self.maps = ordered
        self.overlapping = any(a.base + a.size > b.base for a, b in zip(ordered, ordered[1:], strict=False))

    def add(self, mm) -> None:
        if mm.size <= 0:
            return  # holds no address
        at = bisect.bisect_right(self.bases, mm.base)
        before = self.maps[at - 1] if at else None
        after = self.maps[at] if at < len(self.maps) else None
        if (before is not None and before.base + before.size > mm.base) or (
            after is not None and mm.base + mm.size > after.base
        ):
            self.overlapping = True
        self.bases.insert(at, mm.base)
        self.maps.insert(at, mm)

    def discard(self, mm) -> None:
        """Remove this very object (not one equal to it: Speakeasy's maps compare by base)."""
        at = bisect.bisect_left(self.bases, mm.base)
        while at < len(self.maps) and self.bases[at] == mm.base:
            if self.maps[at] is mm:
                del self.bases[at], self.maps[at]
                return
            at += 1

    def find(self, address: int):
        at = bisect.bisect_right(self.bases, address) - 1
        if at >= 0:
            m = self.maps[at]
            if address <= m.base + m.size - 1:
                return m
        return None


class TrackedMaps(list):
    """Speakeasy's list of memory maps, with the sorted index kept up to date by every change."""

    def __init__(self, maps) -> None:
        super().__init__(maps)
        self.by_base = _SortedMaps(self)

    def append(self, mm) -> None:
        super().append(mm)
        self.by_base.add(mm)

    def remove(self, mm) -> None:
        at = self.index(mm)  # the first equal one (maps compare by base), as list.remove takes
        removed = self[at]
        list.__delitem__(self, at)  # not the override below, which would rebuild the index
        self.by_base.discard(removed)
        if self.by_base.overlapping:
            self.by_base.rebuild(self)  # the overlap may have left with it


def _rebuilding(name: str):
    method = getattr(list, name)

    def changed(self, *args):
        result = method(self, *args)
        self.by_base.rebuild(self)
        return result

    changed.__name__ = name
    return changed


# Changes Speakeasy does not make today (it appends and removes): correct, if slower, should it start.
_OTHER_CHANGES = ("extend", "insert", "pop", "clear", "sort", "reverse")
_OTHER_CHANGES += ("__setitem__", "__delitem__", "__iadd__")
for _name in _OTHER_CHANGES:
    setattr(TrackedMaps, _name, _rebuilding(_name))
del _name


def install(emu) -> None:
    """Index one Speakeasy emulator's memory maps and API handler lookups (after it loaded the image;
    `install_exports` goes before, with the other process-wide patches)."""
    _install_address_maps(emu)
    _install_handler_lookup(emu.api)


def _install_address_maps(emu) -> None:
    tracked = TrackedMaps(emu.maps)
    emu.maps = tracked
    scan = emu.get_address_map  # Speakeasy's own (bound), for overlapping maps

    def get_address_map(address):
        if emu.maps is not tracked or tracked.by_base.overlapping:
            return scan(address)
        return tracked.by_base.find(address)

    emu.get_address_map = get_address_map


def _install_handler_lookup(api) -> None:
    load = api.load_api_handler
    known: dict = {}

    def load_api_handler(mod_name):
        try:
            return known[mod_name]
        except KeyError:
            handler = known[mod_name] = load(mod_name)
            return handler

    api.load_api_handler = load_api_handler


class _Export:
    """One export as Speakeasy's modules list them (it made a namedtuple class for each)."""

    __slots__ = ("name", "address", "forwarder", "ordinal")

    def __init__(self, name, address: int, forwarder, ordinal: int) -> None:
        self.name, self.address, self.forwarder, self.ordinal = name, address, forwarder, ordinal


def _pe_exports(pe) -> list[_Export]:
    """`PeFile._get_pe_exports`, one object per export."""
    try:
        directory = pe.DIRECTORY_ENTRY_EXPORT
    except AttributeError:
        return []
    base = pe.get_base()
    exports = []
    for exp in directory.symbols:
        name = exp.name.decode("utf-8") if exp.name else exp.name
        exports.append(_Export(name, exp.address + base, exp.forwarder, exp.ordinal))
    return exports


def install_exports() -> None:
    """Speakeasy's export lists made by `_pe_exports`, for every module mapped after it (idempotent)."""
    if PeFile._get_pe_exports is not _pe_exports:
        PeFile._get_pe_exports = _pe_exports
