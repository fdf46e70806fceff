"""A benign verdict on a program that did little in the emulator says so: the calibration records how much
of the held-out malware the threshold flagged per decade of API calls (`runtrace calibrate --dataset`),
and scan warns where that was under half."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from runtrace.evaluate.activity import recall_by_api_calls
from runtrace.scan.calibration import (
    CalibrationError,
    RecallBin,
    RecallByApiCalls,
    read_calibration,
    write_calibration,
)
from runtrace.scan.scanner import Scanner, ScanOptions
from runtrace.trace.formats.native import load_trace

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "runtrace" / "data" / "demo"
DEFAULT_MODEL = ROOT / "src" / "runtrace" / "data" / "models" / "default"


def test_recall_is_counted_per_decade_of_api_calls():
    labels = np.array([1, 1, 1, 1, 0, 1, 1])
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.99, 0.7, 0.95])
    calls = np.array([3, 5, 50, 150, 150, 12_000, 10_000])
    bins = recall_by_api_calls(labels, scores, calls, threshold=0.75)
    assert bins == [
        {"api_calls_min": 0, "api_calls_max": 9, "malicious": 2, "flagged": 1},
        {"api_calls_min": 10, "api_calls_max": 99, "malicious": 1, "flagged": 1},
        {
            "api_calls_min": 100,
            "api_calls_max": 999,
            "malicious": 1,
            "flagged": 0,
        },  # the benign file: not counted
        {"api_calls_min": 10_000, "api_calls_max": None, "malicious": 2, "flagged": 1},
    ]  # 1,000-9,999 holds no malware: left out


def test_the_table_survives_writing_and_reading(tmp_path):
    table = RecallByApiCalls((RecallBin(0, 9, 4, 1), RecallBin(10_000, None, 8, 6)), "test scores")
    write_calibration(tmp_path, 0.7, 0.01, "test", recall_by_api_calls=table)
    back = read_calibration(tmp_path).recall_by_api_calls
    assert back == table
    assert back.bin_for(9).recall == 0.25 and back.bin_for(1_000_000).recall == 0.75
    assert back.bin_for(500) is None


@pytest.mark.parametrize(
    "bins",
    [
        "not a list",
        [
            {"api_calls_min": 0, "api_calls_max": 9, "malicious": 2, "flagged": 3}
        ],  # more flagged than there are
        [{"api_calls_min": 0, "api_calls_max": 9, "malicious": 0, "flagged": 0}],
        [{"api_calls_min": "0", "api_calls_max": 9, "malicious": 2, "flagged": 1}],
    ],
)
def test_a_broken_table_is_one_line_naming_the_file(tmp_path, bins):
    obj = {"format": "runtrace-calibration", "version": 2, "threshold": 0.5, "target_fpr": 0.01,
           "recall_by_api_calls": {"source": "x", "bins": bins}}  # fmt: skip
    (tmp_path / "calibration.json").write_text(json.dumps(obj))
    with pytest.raises(CalibrationError, match="calibration.json: recall_by_api_calls") as e:
        read_calibration(tmp_path)
    assert "\n" not in str(e.value)


def _scanner_with_table(tmp_path, bins) -> Scanner:
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model, ignore=shutil.ignore_patterns("similar"))
    c = read_calibration(model)
    table = RecallByApiCalls(tuple(bins), "test")
    write_calibration(model, c.threshold, c.target_fpr, c.source, c.model_version, c.probability_map, table)
    return Scanner.load(model, ScanOptions(explain=0, neighbours=0))


def test_a_benign_verdict_on_little_behaviour_is_qualified(tmp_path):
    manifest = pq.read_table(DEMO / "manifest.parquet").to_pylist()
    bins = [
        RecallBin(0, 9, 10, 0),
        RecallBin(10, 99, 20, 1),
        RecallBin(100, 999, 40, 2),
        RecallBin(1_000, None, 30, 29),
    ]
    scanner = _scanner_with_table(tmp_path, bins)
    seen = set()
    for row in manifest:
        trace = load_trace(DEMO / "traces" / f"{row['sha256']}.rtrace")
        result = scanner.analyse_trace(trace, row["sha256"], row["sha256"], "pe")
        calls = len(trace.api_calls)
        warned = [w for w in result.warnings if w.startswith("benign on little behaviour")]
        if result.verdict == "benign" and calls < 1_000:
            assert len(warned) == 1 and f"made {calls:,} API calls" in warned[0]
            seen.add("warned")
        else:  # flagged, not judged, or a benign program that did a lot: nothing to qualify
            assert not warned
            seen.add(result.verdict if calls < 1_000 else "busy")
    assert "warned" in seen and len(seen) >= 2


def test_no_warning_where_the_threshold_found_most_malware(tmp_path):
    manifest = pq.read_table(DEMO / "manifest.parquet").to_pylist()
    scanner = _scanner_with_table(tmp_path, [RecallBin(0, None, 10, 9)])
    for row in manifest[:10]:
        trace = load_trace(DEMO / "traces" / f"{row['sha256']}.rtrace")
        result = scanner.analyse_trace(trace, row["sha256"], row["sha256"], "pe")
        assert not any(w.startswith("benign on little behaviour") for w in result.warnings)
