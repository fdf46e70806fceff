"""scripts/predictions_by_slice.py: TPR and FPR per slice of the held-out files at one pooled threshold."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evaluate_fakes import make_dataset
from runtrace.evaluate.thresholds import threshold_for_fpr
from script_support import load_script

slices = load_script("predictions_by_slice")


def test_each_slice_counts_its_files_at_the_pooled_threshold():
    data = make_dataset(n_files=60)
    labels = np.asarray(data.labels())
    rng = np.random.default_rng(0)
    scores = np.where(labels == 1, rng.uniform(0.3, 1, 60), rng.uniform(0, 0.8, 60))
    threshold, table = slices.slice_table(labels, scores, data.files, 0.05)
    assert threshold == threshold_for_fpr(labels, scores, 0.05)
    flagged = scores >= threshold
    arch = np.asarray(data.files.column("arch").to_pylist())
    row = next(t for t in table if t["slice"] == "arch" and t["value"] == "amd64")
    malicious, benign = (arch == "amd64") & (labels == 1), (arch == "amd64") & (labels == 0)
    assert row["malicious"] == malicious.sum() > 0 and row["benign"] == benign.sum() > 0
    assert row["tpr"] == flagged[malicious].mean() and row["fpr"] == flagged[benign].mean()
    # Every dimension partitions the files, the API-call decades included.
    for dimension in ("arch", "kind", "API calls", "trace length (instructions)"):
        rows = [t for t in table if t["slice"] == dimension]
        assert sum(t["malicious"] + t["benign"] for t in rows) == 60


def test_the_script_reads_predictions_and_the_dataset(tmp_path, capsys, monkeypatch):
    data = make_dataset(n_files=40)
    labels = np.asarray(data.labels())
    shas = data.files.column("sha256").to_pylist()
    rows = {"protocol": ["by-family"] * 40, "unit": ["file"] * 40, "sha256": shas,
            "label": labels.tolist(), "score": np.linspace(0, 1, 40).tolist()}  # fmt: skip
    pq.write_table(pa.table(rows), tmp_path / "predictions.parquet")
    monkeypatch.setattr(slices.SequenceDataset, "load", staticmethod(lambda path: data))
    slices.main([str(tmp_path), "dataset"])
    out = capsys.readouterr().out
    assert "by-family: 40 files, threshold" in out and "| API calls |" in out
