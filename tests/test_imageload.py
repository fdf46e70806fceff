"""Lean loading of large images gives Speakeasy the same image and tables as its own loading."""

from collections import Counter

import pytest

from conftest import FIXTURES
from runtrace.trace.emulate import imageload


def test_only_speakeasys_pe_class_is_changed():
    imageload.install()
    assert imageload.pefile.PE.__parse__ is not imageload.PeFile.__parse__
    assert imageload.pefile.Counter is Counter  # pefile itself keeps its behaviour for everyone else


@pytest.mark.parametrize("name", ["cli-32.exe", "cli-64.exe", "pillow-imagingtk-64.pyd"])
def test_lean_pe_loading_maps_the_same_image(name, monkeypatch):
    from speakeasy.windows.common import PeFile

    data = (FIXTURES / "benign" / name).read_bytes()
    imageload.install()
    lean = PeFile(data=data)
    # Speakeasy's own loading: pefile's full parse of every directory, its own import patching.
    for key in ("parse_data_directories", "relocate_image", "__parse__"):
        monkeypatch.setattr(PeFile, key, getattr(imageload.pefile.PE, key))
    monkeypatch.setattr(PeFile, "_patch_imports", imageload.speakeasy_patch_imports)
    full = PeFile(data=data)
    assert lean.mapped_image == full.mapped_image
    assert lean.import_table == full.import_table
    assert [(e.name, e.address) for e in lean.exports] == [(e.name, e.address) for e in full.exports]
    assert lean.get_tls_callbacks() == full.get_tls_callbacks()
    assert hasattr(full, "DIRECTORY_ENTRY_BASERELOC") or not full.has_reloc_table()
    # Relocation still works: the table is parsed when an image is moved.
    lean.relocate_image(lean.base + 0x100000)
    assert hasattr(lean, "DIRECTORY_ENTRY_BASERELOC") == full.has_reloc_table()
