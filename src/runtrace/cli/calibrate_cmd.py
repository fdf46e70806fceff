"""`runtrace calibrate`: give a model directory its decision threshold for a target false-positive rate.

The threshold comes from out-of-fold scores of an evaluation run (`runtrace evaluate`, by-file
protocol): every benign file was scored by a model that never saw it, which is the closest estimate of
how the model trained on all files scores benign files it has not seen.
"""

from __future__ import annotations

from pathlib import Path

import typer

from runtrace.cli.app import app, console, fail
from runtrace.cli.choices import Protocol, Representation


@app.command()
def calibrate(
    model: Path = typer.Argument(..., help="Model directory (runtrace train)."),
    report: Path = typer.Option(..., "--report", help="Evaluation report directory (predictions.parquet)."),
    representation: Representation = typer.Option(Representation.BSM, help="Which model's predictions."),
    protocol: Protocol = typer.Option(Protocol.BY_FILE, help="Protocol whose out-of-fold scores are used."),
    target_fpr: float = typer.Option(0.01, help="False-positive rate the threshold is chosen for."),
    version: str = typer.Option(None, help="Model version shown in scan results."),
) -> None:
    """Choose the scan threshold from out-of-fold evaluation scores and write calibration.json."""
    import numpy as np
    import pyarrow.parquet as pq

    from runtrace.evaluate.thresholds import threshold_for_fpr
    from runtrace.scan.calibration import write_calibration

    if not (model / "config.json").exists():
        raise fail(f"{model}: not a model directory (no config.json)")
    path = report / "predictions.parquet"
    try:
        table = pq.read_table(path).to_pydict()
    except (OSError, ValueError) as e:
        raise fail(f"{path}: cannot read predictions ({e})") from None
    wanted = {"representation": representation, "protocol": protocol, "model": "lstm", "unit": "file"}
    keep = [i for i in range(len(table["score"])) if all(table[k][i] == v for k, v in wanted.items())]
    if not keep:
        raise fail(f"{path}: no file-level lstm predictions for {representation} / {protocol}")
    y = np.array([table["label"][i] for i in keep], dtype=np.int64)
    score = np.array([table["score"][i] for i in keep], dtype=np.float64)
    threshold = threshold_for_fpr(y, score, target_fpr)
    benign = int((y == 0).sum())
    tpr = float((score[y == 1] >= threshold).mean()) if (y == 1).any() else float("nan")
    source = (f"out-of-fold {representation} LSTM scores ({protocol}, {benign} benign, {len(y) - benign} "
              f"malicious files) in {report.name}; out-of-fold TPR at this threshold {tpr:.3f}")  # fmt: skip
    written = write_calibration(model, threshold, target_fpr, source, version)
    console.print(f"threshold {threshold:.4f} for FPR <= {target_fpr:g}: {source}\nwritten to {written}")
