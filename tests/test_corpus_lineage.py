"""`runtrace corpus lineage`: family and first-seen tables and histograms, written into a doc."""

from __future__ import annotations

import datetime as dt

from typer.testing import CliRunner

import runtrace.cli  # noqa: F401  (registers every command)
from runtrace.cli.app import app
from runtrace.corpus.lineage_report import family_counts
from runtrace.corpus.manifest import write_manifest

runner = CliRunner()


def _rows() -> list[dict]:
    base = {"arch": "i386", "kind": "exe", "trace_status": "ok"}
    rows = []
    for i in range(30):
        family, kind = ("APT1", "threat-actor") if i < 20 else ("cypherit", "crypter")
        rows.append(
            base
            | {"sha256": f"{i:064x}", "label": "malicious", "origin_group": family, "family": family}
            | {"family_kind": kind, "instruction_count": 5000 if i % 2 else 10}
            | {"first_seen": dt.date(2010 + i % 3, 1, 1), "first_seen_source": "pe-timestamp"}
        )
    rows.append(base | {"sha256": "f" * 64, "label": "malicious", "origin_group": "x"})
    for i in range(5):
        rows.append(
            base
            | {"sha256": f"{100 + i:064x}", "label": "benign", "origin_group": "pypi/a"}
            | {"first_seen": dt.date(2023, 5, 1), "first_seen_source": "pypi-upload"}
        )
    return rows


def test_family_counts_are_per_label_largest_first():
    assert family_counts(_rows()) == [
        ("APT1", "threat-actor", 20, 20, 10),
        ("cypherit", "crypter", 10, 10, 5),
    ]


def test_lineage_writes_tables_and_plots_into_the_doc(tmp_path):
    manifest = write_manifest(_rows(), tmp_path / "manifest.parquet")
    doc = tmp_path / "docs" / "corpus.md"
    doc.parent.mkdir()
    doc.write_text("# Corpus\n\nHand-written text stays.\n")
    result = runner.invoke(app, ["corpus", "lineage", "--manifest", str(manifest), "--write-doc", str(doc)])
    assert result.exit_code == 0, result.output
    text = doc.read_text()
    assert "Hand-written text stays." in text and "corpus-lineage:begin" in text
    assert "| APT1 | threat-actor | 20 | 20 | 10 |" in text
    assert "| pe-timestamp | 30 | 0 |" in text and "| undated | 1 | 0 |" in text
    assert "| 2023 | 0 | 5 |" in text
    for name in ("corpus-families.png", "corpus-years.png"):
        assert (tmp_path / "docs" / "images" / name).stat().st_size > 1000
        assert f"(images/{name})" in text
    # Run again: the block is replaced, not appended.
    runner.invoke(app, ["corpus", "lineage", "--manifest", str(manifest), "--write-doc", str(doc)])
    assert doc.read_text().count("corpus-lineage:begin") == 1


def test_lineage_refuses_an_old_manifest_in_one_line(tmp_path):
    old = write_manifest(_rows(), tmp_path / "m.parquet")
    import pyarrow.parquet as pq

    table = pq.read_table(old).drop(["family"])
    pq.write_table(table, old)
    result = runner.invoke(app, ["corpus", "lineage", "--manifest", str(old)])
    assert result.exit_code == 2 and "no family column" in result.output
