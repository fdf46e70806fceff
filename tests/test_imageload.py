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


def _outcome(data: bytes, choose_by_parsing: bool, monkeypatch) -> tuple:
    """The trace (without its wall time) or the error of one emulation, with Speakeasy choosing its
    emulator from a parse of its own (its own way) or not (runtrace's: the program parsed once)."""
    import dataclasses
    import hashlib

    from runtrace.trace.emulate.emulator import EmulationError, TracerSettings, _Speakeasy, emulate

    monkeypatch.setattr(_Speakeasy, "_chose_by_parsing", choose_by_parsing)
    try:
        trace = emulate(data, hashlib.sha256(data).hexdigest(), "x", TracerSettings(max_instructions=20_000))
    except EmulationError as e:
        return ("error", str(e))
    return (
        dataclasses.replace(trace.meta, wall_time_s=0.0),
        [(b.address, b.data, b.insn_lengths) for b in trace.blocks],
        trace.visits.tolist(),
        trace.api_calls,
    )


DOTNET = ".NET assemblies are not currently supported"  # Speakeasy's words


def _ret(layout) -> bytes:
    return b"\xc3"  # ret


@pytest.mark.parametrize(
    "name, imports",
    [
        ("cli-32.exe", None),
        ("cli-64.exe", None),
        # Speakeasy takes a program importing the kernel for a driver and emulates it in kernel mode.
        ("driver-like", {"ntoskrnl.exe": ["KeBugCheck"], "kernel32.dll": ["ExitProcess"]}),
        # ... and refuses one importing the .NET entry point (runtrace's own check reads the CLR header).
        ("dotnet-like", {"mscoree.dll": ["_CorExeMain"]}),
    ],
)
def test_the_program_parsed_once_runs_as_speakeasys_choice_of_emulator_runs_it(name, imports, monkeypatch):
    from emu_pe import program

    data = (FIXTURES / "benign" / name).read_bytes() if imports is None else program("i386", _ret, imports)
    ours = _outcome(data, False, monkeypatch)
    assert ours == _outcome(data, True, monkeypatch)
    if name == "dotnet-like":
        assert ours == ("error", f"emulator could not load the image: NotSupportedError: {DOTNET}")


def test_speakeasy_parses_the_program_once(monkeypatch):
    import hashlib

    from speakeasy.windows.common import PeFile

    from runtrace.trace.emulate.emulator import TracerSettings, _Speakeasy, emulate

    data = (FIXTURES / "benign" / "cli-32.exe").read_bytes()
    parses = []
    init = PeFile.__init__

    def counting(self, *args, **kwargs):
        if kwargs.get("data") is data:
            parses.append(type(self).__name__)
        init(self, *args, **kwargs)

    monkeypatch.setattr(PeFile, "__init__", counting)
    emulate(data, hashlib.sha256(data).hexdigest(), "x", TracerSettings(max_instructions=1000))
    assert parses == ["PeFile"]
    monkeypatch.setattr(_Speakeasy, "_chose_by_parsing", True)  # Speakeasy's own way: two parses
    emulate(data, hashlib.sha256(data).hexdigest(), "x", TracerSettings(max_instructions=1000))
    assert parses == ["PeFile"] * 3
