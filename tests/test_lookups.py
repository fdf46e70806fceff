"""Speakeasy's lookups, indexed (trace/emulate/lookups.py): the same answers as Speakeasy's own scans."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from speakeasy.memmgr import MemMap
from speakeasy.windows.common import PeFile

from conftest import FIXTURES
from runtrace.trace.emulate import lookups
from runtrace.trace.emulate.emulator import TracerSettings, _Session

PAGE = 0x1000


def _scan(maps, address):
    """Speakeasy's MemoryManager.get_address_map: the first map in list order holding the address."""
    for m in maps:
        if m.base <= address <= (m.base + m.size) - 1:
            return m
    return None


def _map(base: int, size: int) -> MemMap:
    return MemMap(base, size, "emu.test", 7, 0, base, size, False, None)


spans = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3 * PAGE)), max_size=12)


@given(spans, spans, st.lists(st.integers(0, 44 * PAGE), max_size=20), st.data())
def test_the_index_answers_as_speakeasys_scan_through_appends_and_removals(first, later, addresses, data):
    maps = lookups.TrackedMaps([_map(p * PAGE, n) for p, n in first])
    for p, n in later:
        maps.append(_map(p * PAGE + 0x10, n))
    for _ in range(data.draw(st.integers(0, len(maps)))):
        maps.remove(_map(data.draw(st.sampled_from(maps)).base, 1))  # equal by base, as Speakeasy's are
    for address in addresses:
        expected = _scan(maps, address)
        if maps.by_base.overlapping:
            continue  # the emulator asks Speakeasy's scan then (tested below)
        assert maps.by_base.find(address) is expected


def test_overlapping_maps_send_the_lookup_back_to_speakeasys_scan_until_they_part():
    maps = lookups.TrackedMaps([_map(0x10000, PAGE)])
    assert not maps.by_base.overlapping
    maps.append(_map(0x10800, PAGE))  # overlaps the first
    assert maps.by_base.overlapping
    maps.remove(_map(0x10800, 1))
    assert not maps.by_base.overlapping
    assert maps.by_base.find(0x10FFF).base == 0x10000 and maps.by_base.find(0x11000) is None
    maps.extend([_map(0x20000, PAGE)])  # any other change rebuilds the index
    assert maps.by_base.find(0x20010).base == 0x20000


def test_removal_takes_the_first_equal_map_as_list_remove_does():
    a, b = _map(0x10000, PAGE), _map(0x10000, 2 * PAGE)  # equal (same base), overlapping
    maps = lookups.TrackedMaps([a, b])
    maps.remove(_map(0x10000, 1))
    assert list(maps) == [b] and maps.by_base.maps == [b] and not maps.by_base.overlapping


@pytest.fixture
def session(cli32):
    s = _Session(cli32.read_bytes(), TracerSettings())
    yield s
    s.recorder.close()


def test_an_emulation_uses_the_index_and_finds_its_heap_blocks(session):
    emu = session.emu
    assert isinstance(emu.maps, lookups.TrackedMaps)
    base = emu.mem_map(0x40, tag="emu.test")  # a sub-page block, as a heap allocation is
    assert emu.get_address_map(base + 0x3F) is _scan(emu.maps, base + 0x3F)
    assert emu.get_address_map(base + 0x3F).base == base
    emu.mem_free(base)
    assert emu.get_address_map(base) is _scan(emu.maps, base)


def test_handler_lookups_are_remembered_per_name_with_the_same_answers(session):
    api = session.emu.api
    kernel32 = api.load_api_handler("KERNEL32")
    assert kernel32 is api.load_api_handler("kernel32") is api.get_export_func_handler("Kernel32", "Sleep")[0]
    assert api.load_api_handler("mfc42") is None and api.load_api_handler("mfc42") is None
    assert api.load_api_handler(None) is None


def test_exports_read_as_speakeasys_did():
    lookups.install_exports()  # as every emulation does
    assert PeFile._get_pe_exports is lookups._pe_exports
    pe = PeFile(data=(FIXTURES / "benign" / "pillow-imagingtk-64.pyd").read_bytes())
    ours = [(e.name, e.address, e.forwarder, e.ordinal) for e in pe.get_exports()]
    # Speakeasy's loop, one namedtuple class per export, its attributes set on the class
    expected = [
        (s.name.decode("utf-8") if s.name else s.name, s.address + pe.get_base(), s.forwarder, s.ordinal)
        for s in pe.DIRECTORY_ENTRY_EXPORT.symbols
    ]
    assert ours == expected and ours and isinstance(ours[0][0], str)
