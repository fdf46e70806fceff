"""`runtrace similar`, and the nearest known files beside the verdict in `scan`: inputs, documents, exit
statuses, the disagreement note, and a scan path that imports neither torch, datasketch nor pyarrow."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import ROOT
from runtrace.cli.app import app
from runtrace.scan.neighbours import find_neighbours
from runtrace.scan.schema import SCHEMA_VERSION, ScanReport, SimilarReport
from runtrace.similar.index import IndexFileError, SimilarityIndex
from runtrace.similar.signature import minhash, permutations, query_minhash, signature_of
from runtrace.trace.formats.native import load_trace
from scan_support import tiny_model_dir

DEMO = sorted((ROOT / "src" / "runtrace" / "data" / "demo" / "traces").glob("*.rtrace"))[:30]


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _index(traces, label_of) -> SimilarityIndex:
    entries = [
        {"sha256": t.meta.sha256, "label": label_of(i), "family": f"fam{i % 4}" if label_of(i) == "malicious"
         else "", "origin_group": f"origin{i}"}
        for i, t in enumerate(traces)
    ]  # fmt: skip
    return SimilarityIndex.build(entries, [signature_of(t) for t in traces])


@pytest.fixture(scope="module")
def traces():
    return [load_trace(p) for p in DEMO]


@pytest.fixture(scope="module")
def index_dir(traces, tmp_path_factory):
    out = tmp_path_factory.mktemp("similar") / "index"
    _index(traces, lambda i: "malicious" if i % 2 else "benign").save(out)
    return out


def test_a_query_is_signed_as_datasketch_signs_the_index(traces, index_dir) -> None:
    """Queries skip datasketch's import; their signatures must still be datasketch's, bit for bit."""
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 2000):
        items = [rng.bytes(16) for _ in range(n)]
        assert (query_minhash(items, permutations()) == minhash(items)).all()
    index = SimilarityIndex.load(index_dir)
    for trace in traces[:5]:
        built, asked = signature_of(trace), index.sign(trace)
        assert (built.blocks == asked.blocks).all() and (built.apis == asked.apis).all()


def test_similar_lists_the_nearest_known_files_and_reports_bad_inputs(index_dir, tmp_path) -> None:
    result = run(
        "similar", DEMO[1], DEMO[2], tmp_path / "missing.exe", "--index", index_dir, "-k", "2", "--json"
    )
    assert result.exit_code == 2  # an input failed
    report = SimilarReport.model_validate_json(result.stdout)
    assert report.index.entries == len(DEMO) and report.summary.errors == 1 and report.inputs == 3
    first, second, missing = report.results
    for r in (first, second):
        assert r.status == "ok" and 1 <= len(r.neighbours.nearest) <= 2
        # The file itself is in the index: Jaccard 1 (or a file that ran exactly the same code).
        assert r.neighbours.nearest[0].jaccard == 1.0
        assert r.traced_sample_sha256 in [f.sha256 for f in r.neighbours.nearest if f.jaccard == 1.0]
        # ...and the known file that is the input itself says so.
        assert [f.sha256 for f in r.neighbours.nearest if f.same_file] == [r.traced_sample_sha256]
        assert r.neighbours.nearest[0].shared_blocks == pytest.approx(r.neighbours.blocks, abs=1)
    assert missing.status == "error" and missing.name.endswith("missing.exe")
    assert [line for line in result.stderr.splitlines() if "missing.exe" in line] == [
        f"error: {tmp_path / 'missing.exe'}: no such file or directory"
    ]
    text = run("similar", DEMO[1], "--index", index_dir)
    assert text.exit_code == 0 and "shared" in text.stdout and "1 with known files alike" in text.stdout


def test_similar_refuses_a_missing_or_tampered_index_in_one_line(index_dir, tmp_path) -> None:
    result = run("similar", DEMO[1], "--index", tmp_path / "none")
    assert result.exit_code == 2 and "no similarity index" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in index_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    columns = json.loads((broken / "entries.json").read_text())
    columns["label"][0] = "benign" if columns["label"][0] == "malicious" else "malicious"
    (broken / "entries.json").write_text(json.dumps(columns))
    with pytest.raises(IndexFileError, match="entries.json does not match its sha256"):
        SimilarityIndex.load(broken)
    assert run("similar", DEMO[1], "--index", broken).exit_code == 2


def test_neighbours_that_disagree_with_the_verdict_say_so(traces) -> None:
    index = _index(traces, lambda i: "malicious")
    trace = traces[3]
    agree = find_neighbours(index, trace, 5, "malicious")
    assert agree.majority == "malicious" and not agree.disagrees and agree.note is None
    disagree = find_neighbours(index, trace, 5, "benign")
    assert disagree.disagrees and disagree.note.startswith("the model says benign, but")
    assert f"{disagree.malicious} of the {len(disagree.nearest)} nearest" in disagree.note
    unjudged = find_neighbours(index, trace, 5, "unknown")
    assert not unjudged.disagrees and "did not judge" in unjudged.note
    mixed = _index(traces, lambda i: "malicious" if i % 2 else "benign")
    found = find_neighbours(mixed, trace, 4, "benign")
    assert found.malicious + found.benign == len(found.nearest) <= 4
    assert found.majority in ("malicious", "benign", None)


def test_scan_lists_neighbours_beside_the_verdict(index_dir) -> None:
    args = ["scan", DEMO[1], "--model", tiny_model_dir(), "--index", index_dir, "--json", "--explain", "0"]
    result = run(*args, "--min-instructions", "1")
    report = ScanReport.model_validate_json(result.stdout)
    assert report.schema_version == SCHEMA_VERSION
    (r,) = report.results
    assert r.neighbours is not None and r.neighbours.k == 5 and r.neighbours.nearest[0].jaccard == 1.0
    assert r.neighbours.disagrees == (r.neighbours.majority not in (None, r.verdict))
    none = ScanReport.model_validate_json(run(*args, "--neighbours", "0").stdout)
    assert none.results[0].neighbours is None
    # Without --index, the model's own similar/ (the tiny model has none): no neighbours, no error.
    plain = run("scan", DEMO[1], "--model", tiny_model_dir(), "--json", "--explain", "0")
    assert ScanReport.model_validate_json(plain.stdout).results[0].neighbours is None
    bad = run("scan", DEMO[1], "--model", tiny_model_dir(), "--index", index_dir.parent / "none")
    assert bad.exit_code == 2 and "no similarity index" in bad.stderr


def test_the_scan_path_with_neighbours_imports_neither_torch_nor_datasketch_nor_pyarrow(index_dir) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import runtrace.cli\n"
        "from runtrace.scan.inputs import iter_inputs\n"
        "from runtrace.scan.scanner import Scanner, ScanOptions\n"
        f"scanner = Scanner.load(Path({str(tiny_model_dir())!r}), ScanOptions(min_instructions=1),\n"
        f"                       index_dir=Path({str(index_dir)!r}))\n"
        f"(r,) = scanner.scan(list(iter_inputs([Path({str(DEMO[1])!r})])))\n"
        "assert r.neighbours.nearest, r\n"
        "loaded = {'torch', 'datasketch', 'scipy', 'pyarrow'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr


def test_corpus_index_builds_from_a_manifest_and_measures_it(traces, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"sha256": t.meta.sha256, "label": "malicious" if i % 3 else "benign", "origin_group": f"o{i}",
         "arch": "i386", "kind": "exe", "family": f"fam{i % 4}" if i % 3 else None,
         "trace_status": "ok", "trace_path": str(path)}
        for i, (t, path) in enumerate(zip(traces, DEMO, strict=True))
    ]  # fmt: skip
    rows.append({**rows[0], "sha256": "0" * 64, "trace_path": str(tmp_path / "gone.rtrace")})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "manifest.parquet")
    out = tmp_path / "index"
    result = run("corpus", "index", "--manifest", tmp_path / "manifest.parquet", "-o", out, "--measure")
    assert result.exit_code == 0, result.output
    assert f"indexed {len(DEMO)} of {len(DEMO) + 1} traced files" in result.stdout
    assert "gone.rtrace" in result.stderr  # the unreadable trace is named, and the build goes on
    assert "family attribution" in result.stdout and "unseen families" in result.stdout
    index = SimilarityIndex.load(out)
    assert len(index) == len(DEMO) and {e["family"] for e in index.entries} >= {"fam1", "fam2"}
