"""Nearest known programs by executed code: signatures, the index and its files."""

import json

import numpy as np
import pytest

from conftest import ROOT
from runtrace.similar.build import family_attribution, unseen_families
from runtrace.similar.index import IndexFileError, SimilarityIndex
from runtrace.similar.signature import NUM_PERM, block_keys, signature_of
from runtrace.trace.formats.native import load_trace
from runtrace.trace.model import Trace

DEMO = sorted((ROOT / "src" / "runtrace" / "data" / "demo" / "traces").glob("*.rtrace"))


@pytest.fixture(scope="module")
def demo():
    traces = [load_trace(p) for p in DEMO[:40]]
    entries = [{"sha256": t.meta.sha256, "label": "x", "family": f"f{i % 7}"} for i, t in enumerate(traces)]
    return traces, entries, SimilarityIndex.build(entries, [signature_of(t) for t in traces])


def test_a_signature_depends_on_the_executed_blocks_only(demo):
    traces, _, _ = demo
    trace = traces[0]
    again = signature_of(trace)
    assert (again.blocks == signature_of(trace).blocks).all()
    assert again.n_blocks == len(block_keys(trace)) > 0
    # Executing the same blocks again, in another order, is the same set of executed code.
    shuffled = Trace(trace.meta, trace.blocks, trace.visits[::-1].copy(), trace.api_calls)
    assert (signature_of(shuffled).blocks == again.blocks).all()


def test_a_file_is_its_own_nearest_neighbour_unless_excluded(demo):
    traces, entries, index = demo
    for trace, entry in zip(traces, entries, strict=True):
        found = index.nearest(signature_of(trace), 3)
        # Itself, or a file that ran exactly the same code (the demo set has some): Jaccard 1.
        assert found[0].jaccard == 1.0 and entry["sha256"] in [
            n.entry["sha256"] for n in found if n.jaccard == 1.0
        ]
        assert found[0].shared_blocks == pytest.approx(signature_of(trace).n_blocks, abs=1)
        assert all(
            n.entry["sha256"] != entry["sha256"]
            for n in index.nearest(signature_of(trace), 3, exclude=entry["sha256"])
        )


def test_neighbours_are_ranked_by_estimated_jaccard(demo):
    traces, _, index = demo
    for trace in traces[:10]:
        found = index.nearest(signature_of(trace), 5)
        assert [n.jaccard for n in found] == sorted((n.jaccard for n in found), reverse=True)
        assert all(0.0 <= n.jaccard <= 1.0 and n.shared_blocks >= 0 for n in found)


def test_a_trace_without_blocks_has_no_neighbours(demo):
    traces, _, index = demo
    empty = Trace(traces[0].meta, [], np.zeros(0, dtype=np.uint32), [])
    assert index.nearest(signature_of(empty), 5) == []


def test_the_index_survives_its_files_and_refuses_tampered_ones(demo, tmp_path):
    traces, _, index = demo
    index.save(tmp_path / "idx")
    back = SimilarityIndex.load(tmp_path / "idx")
    query = signature_of(traces[5])
    assert back.nearest(query, 5) == index.nearest(query, 5)
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["num_perm"] == NUM_PERM and meta["entries"] == len(index) and back.digest
    signatures = np.load(tmp_path / "idx" / "signatures.npy")
    signatures[0, 0] ^= 1
    np.save(tmp_path / "idx" / "signatures.npy", signatures)
    with pytest.raises(IndexFileError, match="signatures.npy does not match its sha256"):
        SimilarityIndex.load(tmp_path / "idx")
    with pytest.raises(IndexFileError, match="not a similarity index"):
        SimilarityIndex.load(tmp_path / "nothing")


def test_family_measures_count_what_they_say(demo):
    _, _, index = demo
    for e in index.entries:
        e["label"] = "malicious"
    attribution = family_attribution(index)
    assert attribution["files"] == len(index) and 0.0 <= attribution["top1"] <= attribution["top5"] <= 1.0
    unseen = unseen_families(index)
    assert unseen["files"] == len(index) and unseen["families"] == 7
    assert unseen["neighbour_malicious"] in (0.0, 1.0)  # every entry is malicious
