"""`dataset build --match` draws the matched training set; `corpus audit --dataset` audits exactly it."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import runtrace.cli  # noqa: F401  (registers every command)
from runtrace.cli.app import app
from runtrace.corpus.manifest import write_manifest
from runtrace.trace.formats.native import save_trace
from test_models_cli import _trace

runner = CliRunner()


def _row(i: int, traces: Path, label: str, linker: tuple[int, int], size: int, instructions: int) -> dict:
    sha = f"{i:064x}"
    path = traces / f"{sha}.rtrace"
    save_trace(_trace(i, label == "malicious"), path)
    return {
        "sha256": sha, "label": label, "source": "test", "package": "p", "origin_group": f"g{i}",
        "cv_group": f"cv{i // 2}", "arch": "i386", "kind": "exe", "compiler": "msvc", "size": size,
        "linker_major": linker[0], "linker_minor": linker[1], "linker_version": linker[0] + linker[1] / 100,
        "section_count": 4 + i % 3, "import_count": 40 + i % 7, "trace_status": "ok", "trace_path": str(path),
        "instruction_count": instructions, "stop_reason": "exited", "timestamp": 1_200_000_000,
    }  # fmt: skip


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    traces = tmp_path / "traces"
    traces.mkdir()
    rows = []
    for i in range(20):  # VC6 malware and VC6 benign look-alikes of similar size
        rows.append(_row(i, traces, "malicious" if i % 2 else "benign", (6, 0), 60_000 + 500 * i, 5000))
    rows.append(_row(20, traces, "malicious", (5, 12), 60_000, 5000))  # no benign partner: left out
    rows.append(_row(21, traces, "benign", (14, 30), 3_000_000, 5000))  # unlike any malware: not drawn
    rows.append(_row(22, traces, "benign", (6, 0), 61_000, 5000) | {"trace_status": "error"})  # no trace
    path = tmp_path / "corpus" / "manifest.parquet"
    write_manifest(rows, path)
    return path


def test_match_draws_look_alikes_and_the_audit_reads_exactly_that_set(tmp_path: Path, manifest: Path):
    out = tmp_path / "ds"
    build = ["dataset", "build", "-r", "ism", "-m", str(manifest), "-o", str(out), "--match"]
    result = runner.invoke(app, build)
    assert result.exit_code == 0, result.output
    assert "10 malicious files with 10 benign partners; 1 malicious files have no look-alike" in result.output
    files = pq.read_table(out / "files.parquet").to_pylist()
    shas = {f["sha256"] for f in files}
    assert len(files) == 20 and f"{20:064x}" not in shas and f"{21:064x}" not in shas
    assert {f["group"] for f in files} == {f"cv{i}" for i in range(10)}  # the manifest's cv_group
    meta = json.loads((out / "dataset.json").read_text())["meta"]
    assert meta["match"]["unmatched"] == [["i386", "exe", "msvc", "5", 1]]

    doc = tmp_path / "corpus.md"
    doc.write_text("# Corpus\n")
    figures = tmp_path / "figures"
    audit = ["corpus", "audit", "--manifest", str(manifest), "--dataset", str(out), "--subset", "all",
             "--folds", "2", "--write-doc", str(doc), "--figures", str(figures)]  # fmt: skip
    result = runner.invoke(app, audit)
    assert result.exit_code == 0, result.output
    text = doc.read_text()
    first_row = text.split("| subset |", 1)[1].split("\n")[2]
    assert first_row.startswith("| training set |") and "20 (10 / 10)" in first_row
    assert "![training-set: linker](figures/training-set-linker.png)" in text
    assert (figures / "corpus-year.png").is_file()


def test_match_without_traces_is_one_line(tmp_path: Path, manifest: Path):
    table = pq.read_table(manifest).drop_columns(["trace_status"])
    bare = tmp_path / "bare.parquet"
    pq.write_table(table, bare)
    result = runner.invoke(app, ["dataset", "build", "-r", "ism", "-m", str(bare), "-o", str(tmp_path / "x"),
                                 "--match"])  # fmt: skip
    assert result.exit_code != 0 and "no malicious file has a traced benign look-alike" in result.output
