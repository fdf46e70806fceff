"""`runtrace calibrate`: give a model directory its decision threshold for a target false-positive rate.

The threshold comes from out-of-fold scores of an evaluation run (`runtrace evaluate`, by-file
protocol): `runtrace.evaluate.thresholds.threshold_from_report` says why.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from runtrace.cli.app import app, console, fail
from runtrace.cli.choices import Protocol, Representation
from runtrace.evaluate.names import DEFAULT_TARGET_FPR, NGRAM_MODELS, SEQUENCE_MODELS


@app.command()
def calibrate(
    model: Path = typer.Argument(..., help="Model directory (runtrace train)."),
    report: Path = typer.Option(..., "--report", help="Evaluation report directory (predictions.parquet)."),
    representation: Representation = typer.Option(
        None, help="Which representation's predictions (default: the model's, else bsm)."
    ),
    protocol: Protocol = typer.Option(Protocol.BY_FILE, help="Protocol whose out-of-fold scores are used."),
    target_fpr: float = typer.Option(
        DEFAULT_TARGET_FPR, help="False-positive rate the threshold is chosen for."
    ),
    version: str = typer.Option(None, help="Model version shown in scan results."),
) -> None:
    """Choose the scan threshold from out-of-fold evaluation scores and write calibration.json."""
    from runtrace.evaluate.thresholds import threshold_from_report
    from runtrace.models.spec import CONFIG
    from runtrace.scan.calibration import write_calibration

    if not (model / CONFIG).exists():
        raise fail(f"{model}: not a model directory (no {CONFIG})")
    try:
        config = json.loads((model / CONFIG).read_text())
        kind = config.get("kind")
    except (OSError, ValueError, AttributeError) as e:
        raise fail(f"{model}/{CONFIG}: unreadable ({e})") from None
    # The out-of-fold scores of the model's own kind: a transformer is not calibrated on LSTM scores, an
    # n-gram model on the n-gram model's of its representation.
    evaluated = {k: (name, rep) for name, kinds in SEQUENCE_MODELS.items() for rep, k in kinds.items()}
    evaluated.update((k, (name, config.get("representation", "bsm"))) for k, name in NGRAM_MODELS.items())
    name, own_representation = evaluated.get(kind, ("lstm", "bsm"))
    try:
        chosen = threshold_from_report(
            report, representation or own_representation, protocol, target_fpr, model=name
        )
    except ValueError as e:
        raise fail(str(e)) from None
    written = write_calibration(model, chosen.threshold, target_fpr, chosen.source, version)
    console.print(
        f"threshold {chosen.threshold:.6g} for FPR <= {target_fpr:g}: {chosen.source}\nwritten to {written}"
    )
