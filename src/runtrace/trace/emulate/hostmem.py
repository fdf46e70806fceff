"""Every unicorn mapping backed by host memory the tracer allocates, so the recorder can read code bytes
without going through unicorn.

The native recorder checks the bytes of every block in writable memory at every visit (code rewritten
in place must be recorded as it ran).  Through `uc_mem_read` each check went through QEMU's address
space dispatch, about 70 ns: a quarter of the emulation time of a packed program whose code all lies in
writable sections.  With the mapping's host address known, the check hashes the bytes where they are.

`install()` replaces the unicorn binding's `uc_mem_map` (which every `Uc.mem_map` calls) with
`uc_mem_map_ptr` over an anonymous mapping made as unicorn makes its own (zeroed, private, allocated on
first touch), and follows `uc_mem_unmap`, `uc_mem_protect` and `uc_close` to keep the ranges and free
the memory.  unicorn 1 mishandles host-backed regions in one place: when an unmap or a protection
change covers part of a region it splits the region, and for host-backed memory it takes the host
address of the wrong RAM block (its search compares RAM offsets with guest addresses), so the pieces
show other memory.  Such a region is split here first, the way unicorn splits one (unmap it, map the
pieces over the same memory with the region's protection), so unicorn only ever sees whole regions.
"""

from __future__ import annotations  # noqa: I001  (speakeasy_loader must come before unicorn)

import ctypes
import mmap
from dataclasses import dataclass, field

from runtrace.trace.emulate import speakeasy_loader  # noqa: F401  (first: lean imports of unicorn and speakeasy)
import unicorn
from unicorn import unicorn as _uc_module

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t] + [ctypes.c_int] * 3 + [ctypes.c_long]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.restype = ctypes.c_int
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_MAP_FAILED = ctypes.c_void_p(-1).value
_PROT = mmap.PROT_READ | mmap.PROT_WRITE
_FLAGS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
_PAGE = 0x1000  # unicorn's page for x86: mappings, unmappings and protections are aligned to it


@dataclass
class _Buffer:
    host: int
    size: int
    live: int  # bytes of it still mapped


@dataclass
class _Engine:
    """One unicorn engine's host-backed memory: guest start -> (end, host address, buffer) per range."""

    ranges: dict[int, tuple[int, int, _Buffer]] = field(default_factory=dict)
    recorders: list[int] = field(default_factory=list)  # native recorders told of every change


_engines: dict[int, _Engine] = {}
_original: dict[str, object] = {}


def install() -> None:
    """Back every later `uc_mem_map` of this process with host memory (idempotent)."""
    if _original:
        return
    lib = _uc_module._uc
    for name in ("uc_mem_map", "uc_mem_unmap", "uc_mem_protect", "uc_close"):
        _original[name] = getattr(lib, name)
    lib.uc_mem_map = _mem_map
    lib.uc_mem_unmap = _mem_unmap
    lib.uc_mem_protect = _mem_protect
    lib.uc_close = _close


def _key(uch) -> int:
    return uch.value if isinstance(uch, ctypes.c_void_p) else int(uch or 0)


def _mem_map(uch, address: int, size: int, perms: int) -> int:
    # As unicorn allocates a mapping's memory (qemu_anon_ram_alloc): private, anonymous, zeroed.
    host = _libc.mmap(None, size, _PROT, _FLAGS, -1, 0) if size else None
    if host in (None, _MAP_FAILED):
        return _original["uc_mem_map"](uch, address, size, perms)  # unicorn's own answer (an error)
    status = _uc_module._uc.uc_mem_map_ptr(uch, address, size, perms, ctypes.c_void_p(host))
    if status != unicorn.UC_ERR_OK:
        _libc.munmap(host, size)
        return status
    engine = _engines.setdefault(_key(uch), _Engine())
    buffer = _Buffer(host, size, size)
    engine.ranges[address] = (address + size, host, buffer)
    for rec in engine.recorders:
        _recorder_lib().rec_region_add(rec, address, size, host)
    return status


def _split(uch, engine: _Engine, address: int, size: int) -> None:
    """Split host-backed regions that [address, address + size) covers only in part at its ends, where
    unicorn would split them: the range page-aligned, not empty and all of it mapped (otherwise
    unicorn refuses the call and leaves the regions as they are)."""
    end = address + size
    if not size or address % _PAGE or size % _PAGE:
        return
    regions = sorted(_regions(uch))  # by address, the order unicorn splits them in
    covered = address
    for begin, last, _ in regions:
        if begin <= covered <= last:
            covered = last + 1
    if covered < end:
        return
    for begin, last, perms in regions:
        stop = last + 1
        if stop <= address or begin >= end or (address <= begin and stop <= end):
            continue
        start_range = engine.ranges.get(_range_of(engine, begin))
        if start_range is None or _range_of(engine, last) != _range_of(engine, begin):
            continue  # not (wholly) ours: unicorn's own split copies the bytes and is right
        host = start_range[1] + (begin - _range_of(engine, begin))
        cuts = sorted({begin, stop, *(c for c in (address, end) if begin < c < stop)})
        if _original["uc_mem_unmap"](uch, begin, stop - begin) != unicorn.UC_ERR_OK:
            continue
        for lo, hi in zip(cuts, cuts[1:], strict=False):
            _uc_module._uc.uc_mem_map_ptr(uch, lo, hi - lo, perms, ctypes.c_void_p(host + lo - begin))


def _range_of(engine: _Engine, address: int) -> int | None:
    for start, (stop, _, _) in engine.ranges.items():
        if start <= address < stop:
            return start
    return None


def _regions(uch) -> list[tuple[int, int, int]]:
    regions = ctypes.POINTER(_uc_module._uc_mem_region)()
    count = ctypes.c_uint32()
    if _uc_module._uc.uc_mem_regions(uch, ctypes.byref(regions), ctypes.byref(count)) != unicorn.UC_ERR_OK:
        return []
    try:
        return [(regions[i].begin, regions[i].end, regions[i].perms) for i in range(count.value)]
    finally:
        _uc_module._uc.uc_free(regions)


def _mem_protect(uch, address: int, size: int, perms: int) -> int:
    engine = _engines.get(_key(uch))
    if engine is not None and engine.ranges:
        whole = engine.ranges.get(address)
        if (whole is None or whole[0] != address + size) and not perms & ~unicorn.UC_PROT_ALL:
            _split(uch, engine, address, size)  # not just what one mem_map mapped
    return _original["uc_mem_protect"](uch, address, size, perms)


def _mem_unmap(uch, address: int, size: int) -> int:
    engine = _engines.get(_key(uch))
    if engine is None or not engine.ranges:
        return _original["uc_mem_unmap"](uch, address, size)
    end = address + size
    whole = engine.ranges.get(address)
    exact = whole is not None and whole[0] == end  # what one mem_map mapped: no region is cut
    if not exact:
        _split(uch, engine, address, size)
    status = _original["uc_mem_unmap"](uch, address, size)
    if status != unicorn.UC_ERR_OK:
        return status
    for rec in engine.recorders:
        _recorder_lib().rec_region_remove(rec, address, size)
    if exact:
        buffer = whole[2]
        del engine.ranges[address]
        buffer.live -= size
        if buffer.live == 0:  # unicorn holds no part of it any more
            _libc.munmap(buffer.host, buffer.size)
        return status
    for start, (stop, host, buffer) in list(engine.ranges.items()):
        lo, hi = max(start, address), min(stop, end)
        if lo >= hi:
            continue
        del engine.ranges[start]
        buffer.live -= hi - lo
        if start < lo:
            engine.ranges[start] = (lo, host, buffer)
        if hi < stop:
            engine.ranges[hi] = (stop, host + (hi - start), buffer)
        if buffer.live == 0:  # unicorn holds no part of it any more
            _libc.munmap(buffer.host, buffer.size)
        else:  # the part unmapped gives its pages back, as unicorn's own split would
            _libc.madvise(host + (lo - start), hi - lo, mmap.MADV_DONTNEED)
    return status


def _close(uch) -> int:
    status = _original["uc_close"](uch)
    engine = _engines.pop(_key(uch), None)
    if engine is not None:
        for buffer in {id(b): b for _, _, b in engine.ranges.values()}.values():
            _libc.munmap(buffer.host, buffer.size)
    return status


def _recorder_lib():
    from runtrace.trace.emulate.recorder import _lib

    return _lib()


def attach(uc: unicorn.Uc, rec: int) -> None:
    """Tell the native recorder `rec` where the engine's memory is now and after every change."""
    engine = _engines.get(_key(uc._uch))
    if engine is None:
        return
    lib = _recorder_lib()
    for start, (stop, host, _) in engine.ranges.items():
        lib.rec_region_add(rec, start, stop - start, host)
    engine.recorders.append(rec)


def detach(uc: unicorn.Uc, rec: int) -> None:
    engine = _engines.get(_key(uc._uch))
    if engine is not None and rec in engine.recorders:
        engine.recorders.remove(rec)
