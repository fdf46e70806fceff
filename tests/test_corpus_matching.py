"""Matched draws (`dataset build --match`), the class histograms, Debian package dates and licences."""

from __future__ import annotations

import gzip

from runtrace.corpus.debsuite import deb_provenance
from runtrace.corpus.matching import linker_era, match_pool, match_rows, stratum
from runtrace.corpus.plots import write_histograms


def _row(sha, label, size, arch="i386", kind="exe", compiler="msvc", linker=(9, 0), group=None):
    return {"sha256": sha, "label": label, "size": size, "arch": arch, "kind": kind, "compiler": compiler,
            "linker_major": linker[0], "linker_minor": linker[1], "origin_group": group or f"g/{sha}",
            "cv_group": group or f"g/{sha}", "timestamp": 1_200_000_000, "first_seen": None}  # fmt: skip


def test_linker_era():
    assert [linker_era({"linker_major": m, "linker_minor": n}) for m, n in
            [(6, 0), (9, 0), (14, 0), (14, 16), (14, 29), (14, 44), (2, 39)]] == \
        ["6", "9", "14.0", "14.1x", "14.2x", "14.3x", "2"]  # fmt: skip


def test_partners_share_the_stratum_and_lie_within_the_size_caliper():
    rows = [
        _row("m1", "malicious", 100_000),
        _row("m2", "malicious", 100_000, linker=(6, 0)),  # no benign VC6 build: left out
        _row("b1", "benign", 150_000),
        _row("b2", "benign", 1_000_000),  # same stratum, ten times larger: too far
        _row("b3", "benign", 100_000, kind="dll"),
        _row("b4", "benign", 120_000, compiler="mingw-gcc"),
    ]
    result = match_rows(rows, ratio=2)
    assert {r["sha256"] for r in result.rows} == {"m1", "b1"}
    assert result.partners == 1 and result.n_malicious == 1
    assert result.unmatched == {stratum(rows[1]): 1}


def test_scarce_benign_files_are_shared_out_and_groups_capped():
    rows = [_row(f"m{i}", "malicious", 50_000 + i) for i in range(4)]
    rows += [_row(f"b{i}", "benign", 50_000 + i, group="g/big") for i in range(10)]
    result = match_rows(rows, ratio=3, max_per_group=6)
    per_malware = result.partners / result.n_malicious
    assert result.n_malicious == 4 and result.partners == 6 and 1 <= per_malware <= 2
    again = match_rows(rows, ratio=3, max_per_group=6)
    assert [r["sha256"] for r in again.rows] == [r["sha256"] for r in result.rows]  # deterministic


def test_histograms_are_written_per_set_and_trait(tmp_path):
    rows = [_row("m1", "malicious", 4096), _row("b1", "benign", 9000, compiler="mingw-gcc", linker=(2, 39))]
    rows[1]["first_seen"] = "2016-05-01"
    written = write_histograms({"corpus": rows, "empty": []}, tmp_path)
    assert [(s, t) for s, t, _ in written] == [("corpus", t) for t in ("linker", "toolchain", "year", "size")]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for *_, p in written)


def test_debian_provenance_from_changelog_and_copyright(tmp_path):
    doc = tmp_path / "usr" / "share" / "doc" / "nsis-common"
    doc.mkdir(parents=True)
    with gzip.open(doc / "changelog.Debian.gz", "wt") as f:
        f.write("nsis (3.08-3) unstable; urgency=medium\n\n  * x\n\n"
                " -- Someone <someone@example.org>  Mon, 05 Feb 2024 11:18:05 +0100\n\n"
                "nsis (3.08-2) unstable\n\n"
                " -- Someone <s@e.org>  Mon, 01 Jan 2023 10:00:00 +0100\n")  # fmt: skip
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: contrib/*\nLicense: GPL-2+\n\nFiles: *\nCopyright: someone\nLicense: Zlib\n"
    )
    assert deb_provenance(tmp_path, "nsis-common") == ("2024-02-05", "Zlib")
    assert deb_provenance(tmp_path / "nowhere", "x") == ("", "")


def test_match_pool_is_the_malware_and_every_drawable_benign_file():
    rows = [
        _row("m1", "malicious", 100_000),
        _row("b1", "benign", 180_000),
        _row("b2", "benign", 1_000_000),
        _row("b3", "benign", 100_000, arch="amd64"),
    ]
    assert [r["sha256"] for r in match_pool(rows)] == ["m1", "b1"]


def test_match_pool_puts_the_malware_then_the_likeliest_partners_first():
    rows = [_row(f"b{i}", "benign", 100_000 + 1000 * i) for i in range(6)] + [
        _row("m1", "malicious", 100_000)
    ]
    order = [r["sha256"] for r in match_pool(rows, first_ratio=2)]
    assert order[0] == "m1" and set(order[1:3]) == {"b0", "b1"} and len(order) == 7


def test_trace_selection_of_the_match_preview_is_the_draw_in_its_order():
    from runtrace.corpus.tracing import select_rows

    rows = [
        _row("m1", "malicious", 100_000),
        _row("b1", "benign", 110_000),
        _row("b2", "benign", 180_000),
        _row("m2", "malicious", 100_000, linker=(6, 0)),  # no look-alike: not traced by this selection
    ]
    chosen = select_rows(rows, False, None, 0, match_preview=True)
    assert [r["sha256"] for r in chosen] == [r["sha256"] for r in match_rows(rows).rows] == ["m1", "b1"]
    assert [r["sha256"] for r in select_rows(rows, False, "benign", 0, match_preview=True)] == ["b1"]


def test_trace_coverage_counts_files_long_enough_per_source():
    from runtrace.corpus.report import trace_coverage_markdown

    rows = [
        {"label": "benign", "source": "debian", "trace_status": "ok", "instruction_count": 5000},
        {"label": "benign", "source": "debian", "trace_status": "ok", "instruction_count": 10},
        {"label": "benign", "source": "debian", "trace_status": None, "instruction_count": None},
        {"label": "malicious", "source": "arc", "trace_status": "error", "instruction_count": None},
    ]
    text = trace_coverage_markdown(rows)
    assert "| benign | debian | 3 | 2 | 1 | 50% |" in text and "| malicious | arc | 1 | 0 | 0 | – |" in text


def test_trace_selection_by_toolchain_and_kind():
    from runtrace.corpus.tracing import select_rows

    rows = [
        _row("old", "benign", 100_000, linker=(9, 0)),
        _row("new", "benign", 100_000, linker=(14, 30)),
        _row("mal", "malicious", 100_000, linker=(6, 0)),
        _row("lib", "benign", 100_000, linker=(9, 0)) | {"kind": "dll"},
    ]
    chosen = select_rows(rows, False, None, 0, toolchain="msvc", kind="exe")
    assert [r["sha256"] for r in chosen] == ["old", "mal"]
    assert [r["sha256"] for r in select_rows(rows, False, "benign", 0, toolchain="msvc")] == ["old", "lib"]
    assert [r["sha256"] for r in select_rows(rows, False, None, 0, toolchain="msvc-2017+")] == ["new"]
