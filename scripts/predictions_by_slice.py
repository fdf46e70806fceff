"""Where a model finds the malware it finds: TPR and FPR per slice of the held-out files, at one threshold.

Reads a `predictions.parquet` (what `runtrace evaluate` and `scripts/training_data_arms.py --predictions`
write) and the dataset its files came from (for each file's arch, kind, stop reason, compiler, trace
length and API calls: the slices of `runtrace evaluate`'s reports).  Per protocol, the threshold is the
one the pooled out-of-fold scores need for `--target-fpr`; each slice then says how many of its malicious
files score above it (TPR) and how many of its benign ones do (FPR).  The reports' slices use each
fold's own threshold instead; this one answers "of what the operating point finds, where is it".

    .venv/bin/python scripts/predictions_by_slice.py reports/v2i-nested-pred/weighted datasets/bsm-all
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from runtrace.evaluate.build_results import file_slices
from runtrace.evaluate.thresholds import threshold_for_fpr
from runtrace.represent.dataset import DatasetError, SequenceDataset


def slice_table(labels: np.ndarray, scores: np.ndarray, files, target_fpr: float) -> tuple[float, list[dict]]:
    """The threshold for `target_fpr` over all rows, and per slice of `files` (a table with one row per
    score) the malicious and benign counts and the share of each above the threshold."""
    threshold = threshold_for_fpr(labels, scores, target_fpr)
    flagged = scores >= threshold
    rows = []
    for dimension, value, mask in file_slices(files, np.arange(len(labels))):
        malicious, benign = mask & (labels == 1), mask & (labels == 0)
        rows.append(
            {
                "slice": dimension,
                "value": value,
                "malicious": int(malicious.sum()),
                "benign": int(benign.sum()),
                "tpr": float(flagged[malicious].mean()) if malicious.any() else None,
                "fpr": float(flagged[benign].mean()) if benign.any() else None,
            }
        )
    return threshold, rows


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def main(argv: list[str] | None = None) -> None:
    import pyarrow.parquet as pq

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path, help="A directory holding predictions.parquet")
    parser.add_argument("dataset", type=Path, help="The dataset the scored files are in")
    parser.add_argument("--target-fpr", type=float, default=0.01)
    opts = parser.parse_args(argv)
    file = opts.predictions / "predictions.parquet"
    if not file.is_file():
        raise SystemExit(f"error: {file}: no such file")
    try:
        data = SequenceDataset.load(opts.dataset)
    except DatasetError as e:
        raise SystemExit(f"error: {e}") from None
    row_of = {sha: i for i, sha in enumerate(data.files.column("sha256").to_pylist())}
    predictions = [r for r in pq.read_table(file).to_pylist() if r.get("unit", "file") == "file"]
    for protocol in sorted({r["protocol"] for r in predictions}):
        rows = [r for r in predictions if r["protocol"] == protocol]
        missing = sum(r["sha256"] not in row_of for r in rows)
        if missing:
            raise SystemExit(f"error: {file}: {missing} {protocol} files are not in {opts.dataset}")
        files = data.files.take([row_of[r["sha256"]] for r in rows])
        labels = np.asarray([r["label"] for r in rows], dtype=np.int64)
        scores = np.asarray([r["score"] for r in rows], dtype=np.float64)
        threshold, table = slice_table(labels, scores, files, opts.target_fpr)
        print(f"\n{protocol}: {len(rows)} files, threshold {threshold:.6f} for {opts.target_fpr:.1%} FPR")
        print("| slice | value | malicious / benign | TPR | FPR |\n| --- | --- | --- | --- | --- |")
        for t in table:
            print(f"| {t['slice']} | {t['value']} | {t['malicious']} / {t['benign']} | {_pct(t['tpr'])} | {_pct(t['fpr'])} |")


if __name__ == "__main__":
    sys.exit(main())
