"""Code identity: the same code under different bytes is one group; different code is not."""

from __future__ import annotations

import struct

from runtrace.corpus.codeid import apply_code_cap, code_identity, cv_groups
from test_corpus_pemeta import E_LFANEW, make_pe

ADDRESS_AT = 16  # offset in the code section of a 4-byte absolute address
RELOC_AT = 32  # offset in the code section of the base-relocation block


def _relocated(address: int, with_reloc: bool = True) -> bytes:
    """An i386 image whose code holds `address` at ADDRESS_AT, listed (or not) in its relocations."""
    reloc = struct.pack("<IIHH", 0x1000, 12, (3 << 12) | ADDRESS_AT, 0)
    extra = b"\x90" * (ADDRESS_AT - 1) + struct.pack("<I", address)
    extra += b"\x90" * (RELOC_AT - 1 - len(extra)) + reloc
    image = bytearray(make_pe("i386", extra=extra))
    if with_reloc:
        directory = E_LFANEW + 24 + 96 + 5 * 8  # PE32 optional header: data directory 5 (base relocations)
        struct.pack_into("<II", image, directory, 0x1000 + RELOC_AT, len(reloc))
    return bytes(image)


def test_identity_ignores_overlays_and_headers():
    exe = make_pe("i386", linker=(9, 0), extra=b"stub code")
    installer_a = exe + b"PK\x03\x04 package a"
    installer_b = exe + b"PK\x03\x04 another package"
    assert code_identity(installer_a) == code_identity(installer_b) == code_identity(exe)
    # A different linker version stamp (headers only) is still the same code.
    assert code_identity(make_pe("i386", linker=(10, 0), extra=b"stub code")) == code_identity(exe)
    assert code_identity(make_pe("i386", extra=b"other code")) != code_identity(exe)
    assert code_identity(exe).startswith("code:")


def test_identity_ignores_relocated_addresses_only():
    assert code_identity(_relocated(0x401000)) == code_identity(_relocated(0x10401000))
    # Without a relocation entry the address is part of the code.
    assert code_identity(_relocated(0x401000, False)) != code_identity(_relocated(0x10401000, False))


def test_identity_of_unreadable_headers_falls_back_to_the_file():
    assert code_identity(b"MZ" + b"\xff" * 100).startswith("file:")


def _row(sha, origin, code, also_in=()):
    return {"sha256": sha, "origin_group": origin, "code_id": code, "also_in": list(also_in)}


def test_cv_groups_join_origins_that_share_code_but_not_through_a_widely_shared_stub():
    rows = [
        _row("a1", "pypi/pywin32", "code:x"),
        _row("a2", "pypi/pypiwin32", "code:x"),  # the same DLL in two projects: one group
        _row("a3", "pypi/pypiwin32", "code:y"),
        _row("b1", "pypi/lxml", "code:z"),
        *[_row(f"s{i}", f"pypi/p{i}", "code:stub") for i in range(5)],  # one stub, five projects
        _row("p0", "pypi/p0", "code:own"),
    ]
    groups = dict(zip([r["sha256"] for r in rows], cv_groups(rows), strict=True))
    assert groups["a1"] == groups["a2"] == groups["a3"]
    assert groups["b1"] != groups["a1"]
    assert {groups[f"s{i}"] for i in range(5)} == {"code:stub"}
    assert groups["p0"] != "code:stub"


def test_code_cap_keeps_a_few_files_per_code_spread_over_origins():
    rows = [_row(f"{i:02d}", f"pypi/p{i % 3}", "code:stub") for i in range(30)]
    rows.append(_row("zz", "pypi/other", "code:own"))
    kept, dropped = apply_code_cap(rows, 5)
    stub = [r for r in kept if r["code_id"] == "code:stub"]
    assert len(stub) == 5 and dropped["code:stub"] == 25
    assert {r["origin_group"] for r in stub} == {"pypi/p0", "pypi/p1", "pypi/p2"}
    assert any(r["sha256"] == "zz" for r in kept)
    assert apply_code_cap(rows, 0)[0] == rows
