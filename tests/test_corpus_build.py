"""End-to-end corpus builds on small local sources: a zip + csv, a fake Debian unpack, fake wheels.

The downloads are laid out in the cache the way `fetch` leaves them, and the network tools are replaced by
a function that fails, so these tests prove both the no-network resume and the skip-and-report paths.
"""

from __future__ import annotations

import gzip
import json
import os
import urllib.error
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from runtrace.corpus import fetch
from runtrace.corpus.build import (
    BuildOptions,
    apply_group_cap,
    apply_toolchain_cap,
    build_corpus,
    mark_matched_subset,
)
from runtrace.corpus.manifest import SCHEMA, read_manifest
from runtrace.corpus.matching import toolchain_of
from runtrace.corpus.sources import ArchiveSource, DebianSource, PypiSources, SourcesConfig
from test_corpus_pemeta import make_pe
from test_corpus_sources import sha, write_archive

MAL_EXE = make_pe("i386", linker=(6, 0))
MAL_DLL = make_pe("i386", dll=True, linker=(10, 0))
BEN_MS = make_pe("amd64", dll=True, linker=(14, 20))
WINE_EXE = make_pe("i386", extra=b"wine notepad")
WINE_DLL = make_pe("amd64", dll=True, extra=b"wine kernel32")
PYD = make_pe("amd64", dll=True, linker=(14, 29), rich=[(0x0104, 30133, 3)])
LAUNCHER = make_pe("i386", linker=(14, 29), rich=[(0x0104, 30133, 3)], extra=b"launcher")


def _offline(cmd, cwd, timeout_s):
    raise fetch.FetchError(f"ERROR: no network in tests ({cmd[0]})")


# PyPI's JSON API as the tests see it: upload times for the fake projects' wheels, nothing else.
UPLOADS = {"alpha": "2021-03-04T10:00:00.000000Z", "beta": "2019-07-08T12:00:00.000000Z"}


def _fake_pypi(url: str) -> dict:
    project = url.split("/pypi/", 1)[1].split("/")[0]
    if project not in UPLOADS:
        raise urllib.error.URLError("no network in tests")
    wheels = [f"{project}-1.0-cp311-cp311-{p}.whl" for p in ("win32", "win_amd64")]
    return {"releases": {"1.0": [{"filename": w, "upload_time_iso_8601": UPLOADS[project]} for w in wheels]}}


def _wheel(downloads: Path, project: str, platform: str, files: dict[str, bytes]) -> None:
    folder = downloads / "pypi" / project / f"py3.11-{platform}"
    folder.mkdir(parents=True)
    name = f"{project}-1.0-cp311-cp311-{platform}.whl"
    with zipfile.ZipFile(folder / name, "w") as zf:
        for member, data in files.items():
            zf.writestr(member, data)
    (folder / fetch.COMPLETE_MARKER).write_text(name + "\n")


def _debian(downloads: Path, arch: str, files: dict[str, bytes]) -> None:
    folder = downloads / "debian" / f"fakewine_{arch}"
    root = folder / "extracted" / "usr" / "lib" / f"{arch}-linux-gnu" / "wine" / f"{arch}-windows"
    root.mkdir(parents=True)
    (folder / f"fakewine_1.0-1_{arch}.deb").write_bytes(b"!<arch>\n")  # never read: already unpacked
    (folder / "extracted" / fetch.COMPLETE_MARKER).write_text("done\n")
    doc = folder / "extracted" / "usr" / "share" / "doc" / "fakewine"
    doc.mkdir(parents=True)
    with gzip.open(doc / "changelog.Debian.gz", "wt") as f:
        f.write("wine (1.0-1) unstable; urgency=medium\n\n  * Fake.\n\n")
        f.write(" -- A Maintainer <a@example.org>  Sat, 18 Feb 2023 22:16:11 +0000\n\n")
        f.write(
            "wine (0.9-1) unstable; urgency=medium\n\n"
            " -- A <a@example.org>  Mon, 02 Jan 2023 10:00:00 +0000\n"
        )
    for name, data in files.items():
        (root / name).write_bytes(data)


@pytest.fixture
def sources(tmp_path, monkeypatch) -> tuple[BuildOptions, Path]:
    monkeypatch.setattr(fetch, "run_tool", _offline)
    monkeypatch.setattr("runtrace.corpus.dates._fetch_json", _fake_pypi)
    zpath, cpath = write_archive(
        tmp_path,
        {
            sha(MAL_EXE): (MAL_EXE, "Practical Malware Analysis Lab 03-02.exe_", "malicious"),
            sha(MAL_DLL): (MAL_DLL, "Practical Malware Analysis Lab 03-02.dll_", "malicious"),
            sha(BEN_MS): (BEN_MS, "kernel32-64.dll_", "benign"),
            sha(b"MZ junk"): (b"MZ junk", "junk.exe_", "malicious"),
            "ef" * 32: (b"x", "al-khaser_x86.exe_", "grayware"),
        },
    )
    downloads = tmp_path / "downloads"
    _debian(
        downloads,
        "i386",
        {"notepad.exe": WINE_EXE, "gdi.exe16": b"MZ" + bytes(0x3A) + b"\x40\0\0\0NE" + bytes(64)},
    )
    _debian(downloads, "amd64", {"kernel32.dll": WINE_DLL})
    _wheel(downloads, "alpha", "win_amd64", {"alpha/_core.pyd": PYD, "alpha/x.pyd": b"not a PE at all"})
    _wheel(downloads, "beta", "win32", {"beta/launcher.exe": LAUNCHER, "beta/copy_of_core.pyd": PYD})
    _wheel(downloads, "beta", "win_amd64", {"beta/arm.exe": make_pe("arm64")})
    config = SourcesConfig(
        archive=[ArchiveSource(name="arc", zip=str(zpath), csv=str(cpath))],
        debian=[
            DebianSource(
                package="fakewine",
                architectures=["i386", "amd64"],
                pe_globs=["usr/lib/*/wine/*-windows/*"],
                group_by="module",
            )
        ],
        pypi=PypiSources(projects=["alpha", "beta", "gamma"], pe_suffixes=[".exe", ".pyd"]),
    )
    opts = BuildOptions(corpus_dir=tmp_path / "corpus", downloads_dir=downloads, sources=config)
    return opts, tmp_path


def test_build_labels_dedups_and_reports(sources):
    opts, _ = sources
    result = build_corpus(opts)
    rows = {r["sha256"]: r for r in read_manifest(result.manifest_path).to_pylist()}
    assert read_manifest(result.manifest_path).schema.names == SCHEMA.names

    assert rows[sha(MAL_EXE)]["label"] == "malicious" and rows[sha(BEN_MS)]["label"] == "benign"
    assert rows[sha(MAL_EXE)]["origin_group"] == rows[sha(MAL_DLL)]["origin_group"] == "arc/pma-lab-03"
    assert rows[sha(WINE_EXE)]["origin_group"] == "debian/fakewine/notepad.exe"
    assert rows[sha(WINE_EXE)]["package_version"] == "1.0-1 (i386)"
    assert rows[sha(PYD)]["origin_group"] == "pypi/alpha" and rows[sha(PYD)]["also_in"] == ["pypi/beta"]
    assert rows[sha(LAUNCHER)]["compiler"] == "msvc" and rows[sha(LAUNCHER)]["kind"] == "exe"
    assert len(rows) == 7

    # Malware stays in its archive; benign files are in the content-addressed store, read-only.
    mal = rows[sha(MAL_EXE)]
    assert mal["storage"] == "zip" and mal["archive_member"] == f"{sha(MAL_EXE)}.bin"
    assert not (opts.corpus_dir / "samples" / sha(MAL_EXE)[:2] / sha(MAL_EXE)).exists()
    ben = rows[sha(WINE_DLL)]
    assert ben["storage"] == "store" and Path(ben["path"]).read_bytes() == WINE_DLL
    assert not os.access(ben["path"], os.W_OK) or os.geteuid() == 0

    skipped = [json.loads(line) for line in result.skipped_path.read_text().splitlines()]
    reasons = {s["reason"].split(" (")[0] for s in skipped}
    text = json.dumps(skipped)
    assert "16-bit NE executable, not PE" in reasons
    assert "too small for a PE file" in text and "neither class" in text and "arm64" in text
    assert "pip download gamma" in text  # the missing project is reported, the rest went on
    assert "MSVC" not in text


def test_rebuild_reuses_the_manifest_and_keeps_trace_columns(sources, monkeypatch):
    opts, _ = sources
    first = build_corpus(opts)
    table = read_manifest(first.manifest_path).to_pylist()
    for row in table:
        row["instruction_count"], row["stop_reason"] = 1234, "exited"
    from runtrace.corpus.manifest import write_manifest

    write_manifest(table, first.manifest_path)

    # A rerun must not decrypt archive members again: their verified hashes are reused.
    from runtrace.corpus import sources as sources_mod

    real = sources_mod.archive_candidates

    def guarded(src):
        for item in real(src):
            if hasattr(item, "read") and item.label == "malicious":
                item.read = lambda: (_ for _ in ()).throw(AssertionError("decrypted again"))
            yield item

    monkeypatch.setattr("runtrace.corpus.build.archive_candidates", guarded)
    second = build_corpus(opts)
    assert {r["sha256"] for r in second.rows} == {r["sha256"] for r in first.rows}
    assert all(r["instruction_count"] == 1234 for r in second.rows)


def test_a_moved_corpus_folder_still_finds_its_samples_and_traces(sources):
    import pyarrow.parquet as pq

    from runtrace.corpus.manifest import write_manifest

    opts, tmp = sources
    first = build_corpus(opts)
    rows = read_manifest(first.manifest_path).to_pylist()
    for row in rows:
        row["trace_path"] = str(opts.corpus_dir / "traces" / f"{row['sha256']}.rtrace")
    write_manifest(rows, first.manifest_path)
    stored = pq.read_table(first.manifest_path).to_pylist()
    ben = next(r for r in stored if r["sha256"] == sha(WINE_DLL))
    # On disk the corpus's own files are named relative to the manifest; archives outside it stay absolute.
    assert ben["path"] == f"samples/{sha(WINE_DLL)[:2]}/{sha(WINE_DLL)}"
    assert ben["trace_path"] == f"traces/{sha(WINE_DLL)}.rtrace"
    assert Path(next(r for r in stored if r["storage"] == "zip")["path"]).is_absolute()

    moved = tmp / "elsewhere" / "corpus"
    moved.parent.mkdir()
    opts.corpus_dir.rename(moved)
    again = {r["sha256"]: r for r in read_manifest(moved / first.manifest_path.name).to_pylist()}
    assert Path(again[sha(WINE_DLL)]["path"]).read_bytes() == WINE_DLL
    assert again[sha(WINE_DLL)]["trace_path"] == str(moved / "traces" / f"{sha(WINE_DLL)}.rtrace")


def test_label_conflicts_are_dropped(sources):
    opts, tmp = sources
    # The same bytes shipped as benign in a wheel and listed as malware in the archive.
    _wheel(opts.downloads_dir, "gamma", "win32", {"gamma/evil.exe": MAL_EXE})
    (opts.downloads_dir / "pypi" / "gamma" / "py3.11-win32" / fetch.COMPLETE_MARKER).touch()
    result = build_corpus(opts)
    assert sha(MAL_EXE) not in {r["sha256"] for r in result.rows}
    assert any("labelled both" in p.reason for p in result.problems)


def test_corpus_inside_the_checkout_is_refused(sources):
    opts, _ = sources
    opts.corpus_dir = Path(__file__).resolve().parent / "corpus-here"
    with pytest.raises(ValueError, match="inside the git checkout"):
        build_corpus(opts)
    assert not opts.corpus_dir.exists()


def _row(i: int, label: str, group: str, arch: str = "i386", kind: str = "dll") -> dict:
    return {"sha256": f"{i:064x}", "label": label, "origin_group": group, "arch": arch, "kind": kind}


def test_group_cap_keeps_the_arch_kind_mix():
    rows = [
        _row(i, "benign", "big", "i386" if i % 2 else "amd64", "exe" if i < 4 else "dll") for i in range(40)
    ]
    rows += [_row(100 + i, "benign", f"small{i}") for i in range(3)]
    kept, dropped = apply_group_cap(rows, 8)
    big = [r for r in kept if r["origin_group"] == "big"]
    assert len(big) == 8 and dropped == {"big": 32}
    assert {(r["arch"], r["kind"]) for r in big} == {
        ("i386", "exe"),
        ("amd64", "exe"),
        ("i386", "dll"),
        ("amd64", "dll"),
    }
    assert len(kept) == 11
    assert apply_group_cap(rows, 0) == (rows, {})


def test_programs_can_have_a_group_cap_of_their_own():
    # 30 programs and 30 DLLs in one group; malware is never capped.
    rows = [_row(i, "benign", "tool", ("i386", "amd64")[i % 2], ("exe", "dll")[i >= 30]) for i in range(60)]
    rows.append(_row(999, "malicious", "tool"))
    kept, dropped = apply_group_cap(rows, 10, exe_cap=20)
    kinds = Counter(r["kind"] for r in kept if r["label"] == "benign")
    assert kinds == {"exe": 20, "dll": 10} and dropped == {"tool": 30}
    assert {r["arch"] for r in kept if r["kind"] == "exe"} == {"i386", "amd64"}
    assert sum(r["label"] == "malicious" for r in kept) == 1
    # Without a cap for programs they share the group's one cap, as before.
    kept, _ = apply_group_cap(rows, 10)
    assert sum(r["label"] == "benign" for r in kept) == 10
    # Programs capped, the rest not.
    kept, dropped = apply_group_cap(rows, 0, exe_cap=5)
    assert Counter(r["kind"] for r in kept if r["label"] == "benign") == {"exe": 5, "dll": 30}


def _looks(
    row: dict, linker: tuple[int, int], size: int = 4096, sections: int = 4, imports: int = 10
) -> dict:
    return row | {"linker_major": linker[0], "linker_minor": linker[1], "size": size,
                  "section_count": sections, "import_count": imports}  # fmt: skip


def test_matched_subset_pairs_lookalikes_within_arch_kind_and_toolchain():
    mal = [
        _looks(_row(i, "malicious", f"m{i}", "i386", "exe"), lk)
        for i, lk in enumerate([(6, 0), (14, 29), (2, 39)])
    ]
    ben = [
        _looks(_row(10, "benign", "b0", "i386", "exe"), (14, 29), size=4500),  # near twin of m1
        _looks(_row(11, "benign", "b1", "i386", "exe"), (14, 29), size=1 << 24),  # same linker, far too big
        _looks(_row(12, "benign", "b2", "i386", "exe"), (2, 39), size=4200),  # near twin of m2
        _looks(_row(13, "benign", "b3", "i386", "dll"), (6, 0)),  # a DLL never partners an EXE
        _looks(_row(14, "benign", "b4", "i386", "exe"), (9, 0)),  # another toolchain never partners
    ]
    rows = mal + ben
    mark_matched_subset(rows, caliper=1.0)
    assert [r["matched"] for r in rows] == [False, True, True, True, False, True, False, False]
    assert rows[3]["match_id"] == rows[1]["sha256"] and rows[5]["match_id"] == rows[2]["sha256"]


def test_matched_subset_caps_partners_per_group():
    rows = [_looks(_row(i, "malicious", f"m{i}"), (14, 0)) for i in range(4)]
    rows += [_looks(_row(10 + i, "benign", "one-project"), (14, 0)) for i in range(4)]
    rows += [_looks(_row(20, "benign", "other"), (14, 0))]
    mark_matched_subset(rows, max_per_group=2)
    chosen = [r["origin_group"] for r in rows if r["matched"] and r["label"] == "benign"]
    assert sorted(chosen) == ["one-project", "one-project", "other"]


def test_a_manifest_version_bump_recomputes_metadata_but_keeps_traces(sources):
    import pyarrow.parquet as pq

    opts, _ = sources
    first = build_corpus(opts)
    table = read_manifest(first.manifest_path)
    rows = table.to_pylist()
    for row in rows:
        row["instruction_count"], row["compiler"] = 77, "stale"
    from runtrace.corpus.manifest import rows_to_table

    old = rows_to_table(rows).replace_schema_metadata({b"runtrace.manifest_version": b"0"})
    pq.write_table(old, first.manifest_path)
    second = build_corpus(opts)
    assert all(r["instruction_count"] == 77 for r in second.rows)
    assert "stale" not in {r["compiler"] for r in second.rows}


def test_history_installers_are_capped_by_code_and_grouped_by_it(tmp_path, monkeypatch):
    """Six projects' installers share one stub: the code cap keeps three, all in one CV group, and the
    payload modules stay in their projects' groups with the upload date and licence."""
    import datetime
    import io

    from runtrace.corpus import pypi_history as ph
    from runtrace.corpus.history_config import PypiHistorySources

    stub = make_pe("i386", linker=(9, 0), extra=b"wininst-9.0 stub")
    names = [n for n in (f"p{i}" for i in range(30)) if not ph.is_reserved(n)][:6]
    listing = {}
    for i, project in enumerate(names):
        payload = io.BytesIO()
        with zipfile.ZipFile(payload, "w") as zf:
            zf.writestr(f"PLATLIB/{project}/_ext.pyd", make_pe("i386", dll=True, extra=b"e%d" % i))
        name = f"{project}-1.0.win32-py2.7.exe"
        (tmp_path / name).write_bytes(stub + payload.getvalue())
        listing[project] = ph.ReleaseFile(project, "1.0", name, "", "", 1, f"2010-06-0{i + 1}",
                                          "bdist_wininst", "2.7", "MIT")  # fmt: skip
    monkeypatch.setattr(ph, "project_json", lambda project, downloads_dir: {"project": project})
    monkeypatch.setattr(ph, "windows_files", lambda meta, entry, cfg: [listing[meta["project"]]])
    monkeypatch.setattr(ph, "download", lambda f, downloads_dir: tmp_path / f.filename)
    config = SourcesConfig(pypi_history=PypiHistorySources(projects=names))
    opts = BuildOptions(corpus_dir=tmp_path / "corpus", downloads_dir=tmp_path / "dl", sources=config,
                        max_per_code_group=3)  # fmt: skip
    result = build_corpus(opts)
    rows = read_manifest(result.manifest_path).to_pylist()
    installers = [r for r in rows if r["kind"] == "exe"]
    modules = [r for r in rows if r["kind"] == "dll"]
    assert len(installers) == 3 and len(modules) == 6
    stub_code = installers[0]["code_id"]
    assert {r["code_id"] for r in installers} == {stub_code} and result.code_capped == {stub_code: 3}
    assert {r["cv_group"] for r in installers} == {installers[0]["code_id"]}
    assert {r["cv_group"] for r in modules} == {f"pypi/{n}" for n in names}
    p0 = next(r for r in modules if r["origin_group"] == f"pypi/{names[0]}")
    assert p0["first_seen"] == datetime.date(2010, 6, 1) and p0["licence"] == "MIT"
    assert p0["source"] == "pypi-history" and p0["member"].endswith(f".exe/PLATLIB/{names[0]}/_ext.pyd")


def test_programs_of_named_toolchains_are_capped_per_group():
    def program(i, group, compiler, linker, arch="i386", kind="exe", label="benign"):
        return _row(i, label, group, arch, kind) | {
            "compiler": compiler, "linker_major": linker[0], "linker_minor": linker[1]
        }  # fmt: skip

    rows = [program(i, "rusty", "rust", (14, 0), ("i386", "amd64")[i % 2]) for i in range(10)]
    rows += [program(100 + i, "tool", "msvc", (14, 16)) for i in range(6)]  # Visual C++ 2017
    rows += [program(200 + i, "tool", "msvc", (14, 0)) for i in range(6)]  # Visual C++ 2015: never capped
    rows += [program(300 + i, "tool", "msvc", (14, 29), kind="dll") for i in range(6)]  # DLLs: left alone
    rows += [program(400 + i, "rusty", "rust", (14, 0), label="malicious") for i in range(4)]
    assert toolchain_of(rows[10]) == "msvc-2017+" and toolchain_of(rows[16]) == "msvc"
    assert toolchain_of(rows[0]) == "rust"

    kept, dropped = apply_toolchain_cap(rows, {"rust": 4, "msvc-2017+": 2})
    assert dropped == {("exe", "rust"): 6, ("exe", "msvc-2017+"): 4}
    rust = [r for r in kept if r["label"] == "benign" and r["compiler"] == "rust"]
    assert len(rust) == 4 and {r["arch"] for r in rust} == {"i386", "amd64"}
    counts = Counter((r["kind"], toolchain_of(r)) for r in kept if r["origin_group"] == "tool")
    assert counts == {("exe", "msvc-2017+"): 2, ("exe", "msvc"): 6, ("dll", "msvc-2017+"): 6}
    assert sum(r["label"] == "malicious" for r in kept) == 4
    assert apply_toolchain_cap(rows, {}) == (rows, {})

    # DLLs have caps of their own; with one kept per group, the architecture is drawn per group.
    kept, dropped = apply_toolchain_cap(rows, {}, {"msvc-2017+": 1})
    assert dropped == {("dll", "msvc-2017+"): 5} and len(kept) == len(rows) - 5
    wine = [program(500 + i, f"wine/mod{i // 2}", "mingw-gcc", (2, 40), ("i386", "amd64")[i % 2], "dll")
            for i in range(80)]  # fmt: skip
    kept, _ = apply_toolchain_cap(wine, {}, {"mingw-gcc": 1})
    assert len(kept) == 40 and len({r["origin_group"] for r in kept}) == 40
    assert 10 < sum(r["arch"] == "i386" for r in kept) < 30


def _reusing(earlier: BuildOptions, tmp_path: Path) -> BuildOptions:
    """A build into a new folder that takes its files from `earlier`'s, with every source off."""
    return BuildOptions(
        corpus_dir=tmp_path / "corpus2",
        downloads_dir=tmp_path / "nothing-downloaded",
        sources=SourcesConfig(),
        reuse_build=earlier.corpus_dir,
    )


def test_a_build_can_take_the_files_of_an_earlier_build_without_fetching(sources, tmp_path, monkeypatch):
    opts, _ = sources
    first = build_corpus(opts)
    earlier = {r["sha256"]: r for r in read_manifest(first.manifest_path).to_pylist()}

    # Nothing may be fetched, decrypted or parsed again: every source is off, PE parsing fails.
    def no_parse(*a, **k):
        raise AssertionError("parsed again")

    monkeypatch.setattr("runtrace.corpus.build.read_pe_meta", no_parse)
    monkeypatch.setattr("runtrace.corpus.reuse._read_member", no_parse)  # malware: not decrypted again
    again = _reusing(opts, tmp_path)
    second = build_corpus(again)
    rows = {r["sha256"]: r for r in read_manifest(second.manifest_path).to_pylist()}
    assert rows.keys() == earlier.keys()
    for sha256, row in rows.items():
        old = earlier[sha256]
        for column in ("label", "source", "package", "origin_group", "also_in", "first_seen",
                       "first_seen_source", "code_id", "compiler", "cv_group", "storage"):  # fmt: skip
            assert row[column] == old[column], column
        if row["storage"] == "store":  # the same file, linked into the new store
            assert Path(row["path"]).parent.parent.parent == again.corpus_dir
            assert Path(row["path"]).stat().st_ino == Path(old["path"]).stat().st_ino
        else:
            assert row["path"] == old["path"] and row["archive_member"] == old["archive_member"]
    assert rows[sha(PYD)]["also_in"] == ["pypi/beta"]


def test_the_earlier_build_s_caps_are_applied_afresh(sources, tmp_path):
    # The earlier build dropped its Visual C++ 2017+ programs; the files it read before its caps are all
    # offered again, so a build without that cap has them back.
    opts, _ = sources
    opts.exes_per_group_by_toolchain = {"msvc-2017+": 0}
    first = build_corpus(opts)
    assert first.toolchain_capped == {("exe", "msvc-2017+"): 1}
    assert sha(LAUNCHER) not in {r["sha256"] for r in first.rows}
    uncapped = _reusing(opts, tmp_path)
    second = build_corpus(uncapped)
    assert {r["sha256"] for r in second.rows} == {r["sha256"] for r in first.rows} | {sha(LAUNCHER)}


def test_size_figures_count_the_benign_side_and_its_era_programs():
    from runtrace.corpus.report import size_figures, size_markdown

    def row(i, kind, linker, compiler="msvc", label="benign", group="g"):
        return _row(i, label, f"{group}{i % 3}", kind=kind) | {
            "compiler": compiler, "linker_major": linker[0], "linker_minor": linker[1]
        }  # fmt: skip

    rows = [row(i, "exe", (9, 0)) for i in range(2)]  # Visual C++ 2008
    rows += [row(10 + i, "exe", (14, 0)) for i in range(2)]  # 2015: still the era
    rows += [row(20 + i, "exe", (14, 16)) for i in range(3)]  # 2017
    rows += [row(30 + i, "exe", (14, 0), "rust") for i in range(3)]  # rustc links with 14.x: not MSVC's era
    rows += [row(40 + i, "dll", (9, 0)) for i in range(10)]
    rows += [row(50 + i, "exe", (6, 0), label="malicious") for i in range(50)]
    figures = size_figures(rows)
    assert (figures.files, figures.groups, figures.exes, figures.era_exes) == (20, 3, 10, 4)
    met = {name: ok for name, _, ok in figures.figures()}
    assert met == {"files": False, "origin groups": False, "EXE share": True,
                   "VC++ <= 2015 share of EXEs": True}  # fmt: skip
    assert "| VC++ <= 2015 share of EXEs | 40.0% (4) | a third | yes |" in size_markdown(rows)
