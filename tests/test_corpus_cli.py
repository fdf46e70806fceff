"""`runtrace corpus build | audit | trace` through the command line, on small local data only."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from runtrace.cli import app
from runtrace.corpus.manifest import read_manifest
from test_corpus_pemeta import make_pe
from test_corpus_sources import sha, write_archive

runner = CliRunner()


@pytest.fixture
def tiny_corpus(tmp_path, monkeypatch):
    """A corpus built from a zip + csv alone: 12 'malicious' EXEs and 12 'benign' DLLs, in 24 groups."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    members = {}
    for i in range(12):
        mal = make_pe("i386", linker=(6, 0), extra=b"m%d" % i)
        ben = make_pe("amd64", dll=True, linker=(2, 39), extra=b"b%d" % i)
        members[sha(mal)] = (mal, f"m{i}.exe_", "malicious")
        members[sha(ben)] = (ben, f"lib{i}.dll_", "benign")
    zpath, cpath = write_archive(tmp_path, members)
    corpus = tmp_path / "corpus"
    args = ["corpus", "build", "--corpus-dir", str(corpus), "--malware-zip", str(zpath)]
    result = runner.invoke(app, [*args, "--malware-csv", str(cpath), "--no-debian", "--no-pypi"])
    assert result.exit_code == 0, result.output
    return corpus, result.output


def test_build_prints_the_composition(tiny_corpus):
    corpus, output = tiny_corpus
    assert "corpus composition" in output and "mingw-gcc" in output
    assert "issue 24" in output and "VC++ <= 2015 share of EXEs" in output
    assert (corpus / "manifest.parquet").is_file()
    assert read_manifest(corpus / "manifest.parquet").num_rows == 24


def test_audit_writes_the_doc_block_and_finds_the_shortcut(tiny_corpus, tmp_path):
    corpus, _ = tiny_corpus
    doc = tmp_path / "corpus.md"
    doc.write_text("# Corpus\n\nhand-written prose\n")
    args = ["corpus", "audit", "--corpus-dir", str(corpus), "--write-doc", str(doc), "--subset", "all"]
    result = runner.invoke(app, [*args, "--folds", "3"])
    assert result.exit_code == 0, result.output
    text = doc.read_text()
    assert text.startswith("# Corpus\n\nhand-written prose") and "### Shortcut audit" in text
    # A second run replaces the block instead of appending another one.
    assert runner.invoke(app, [*args, "--folds", "3"]).exit_code == 0
    assert doc.read_text().count("### Shortcut audit") == 1


def test_bad_inputs_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bogus = tmp_path / "manifest.parquet"
    bogus.write_text("not parquet")
    result = runner.invoke(app, ["corpus", "audit", "--manifest", str(bogus)])
    assert result.exit_code != 0 and "not a readable Parquet manifest" in result.output
    assert "Traceback" not in result.output
    bad_sources = tmp_path / "s.toml"
    bad_sources.write_text("[[archive]]\nname = 1\n")
    result = runner.invoke(app, ["corpus", "build", "--sources", str(bad_sources)])
    assert result.exit_code != 0 and "s.toml: archive.0.name" in result.output
    result = runner.invoke(app, ["corpus", "build", "--malware-zip", str(bogus)])
    assert result.exit_code != 0 and "go together" in result.output
    result = runner.invoke(app, ["corpus", "trace", "--toolchain", "vc6"])
    assert result.exit_code != 0 and "--toolchain vc6: not one of msvc, msvc-2017+" in result.output
    result = runner.invoke(app, ["corpus", "build", "--reuse-build", str(tmp_path)])
    assert result.exit_code != 0 and "no parsed.parquet there" in result.output


def test_trace_adds_trace_columns_via_the_tracer_batch(tiny_corpus, monkeypatch):
    corpus, _ = tiny_corpus
    from runtrace.trace.emulate import batch

    seen = []

    def fake_batch(inputs, out_dir, settings=None, workers=None, on_done=None, **kw):
        outcomes = []
        for sample in inputs:
            data = sample.read()  # malware comes straight out of the zip, in memory
            assert data[:2] == b"MZ"
            seen.append(sample.sha256)
            failed = len(seen) == 1
            o = batch.TraceOutcome(
                sample.sha256, sample.name, "error" if failed else "ok", path="" if failed else "t.rtrace",
                instruction_count=0 if failed else 1000 + len(seen), block_count=3, visit_count=9,
                api_call_count=1, stop_reason="emulation_fault" if failed else "exited",
                error="boom" if failed else "",
            )  # fmt: skip
            on_done(o)
            outcomes.append(o)
        return outcomes

    monkeypatch.setattr(batch, "trace_batch", fake_batch)
    result = runner.invoke(app, ["corpus", "trace", "--corpus-dir", str(corpus), "--limit", "6"])
    assert result.exit_code == 0, result.output
    assert "6 samples: 5 traced" in result.output and "boom" in result.output
    rows = read_manifest(corpus / "manifest.parquet").to_pylist()
    traced = [r for r in rows if r["trace_status"] is not None]
    assert len(traced) == 6 and {r["label"] for r in traced} == {"malicious", "benign"}
    assert sum(r["trace_status"] == "error" for r in traced) == 1
    assert all(r["instruction_count"] > 1000 for r in traced if r["trace_status"] == "ok")
    # With trace statistics present the audit uses them.
    result = runner.invoke(
        app, ["corpus", "audit", "--corpus-dir", str(corpus), "--subset", "all", "--folds", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "trace_length" in result.output


def test_ctrl_c_during_corpus_trace_keeps_the_finished_rows(tiny_corpus, monkeypatch):
    corpus, _ = tiny_corpus
    from runtrace.trace.emulate import batch

    def interrupted_batch(inputs, out_dir, settings=None, workers=None, on_done=None, **kw):
        first = next(iter(inputs))
        done = batch.TraceOutcome(first.sha256, first.name, "ok", path="t.rtrace", instruction_count=1234)
        on_done(done)
        raise batch.BatchInterrupted([done], unfinished=3)

    monkeypatch.setattr(batch, "trace_batch", interrupted_batch)
    result = runner.invoke(app, ["corpus", "trace", "--corpus-dir", str(corpus), "--limit", "4"])
    assert result.exit_code == 130, result.output
    assert "interrupted: 1 samples finished and are in the manifest, 3 not" in result.output
    rows = read_manifest(corpus / "manifest.parquet").to_pylist()
    traced = [r for r in rows if r["trace_status"] is not None]
    assert len(traced) == 1 and traced[0]["instruction_count"] == 1234
