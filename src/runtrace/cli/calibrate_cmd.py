"""`runtrace calibrate`: give a model directory its decision threshold for a target false-positive rate,
and a map from its score to a probability one can read.

Both come from out-of-fold scores of an evaluation run (`runtrace evaluate`):
`runtrace.evaluate.thresholds` says why; `runtrace.scan.calibration` what a scan does with them.
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
    also: list[Protocol] = typer.Option(
        [],
        "--also-protocol",
        help="Keep the FPR at or under the target on this protocol's out-of-fold scores too (repeatable): "
        "the threshold is then the highest the protocols need.  The probability map stays --protocol's.",
    ),
    target_fpr: float = typer.Option(
        DEFAULT_TARGET_FPR, help="False-positive rate the threshold is chosen for."
    ),
    version: str = typer.Option(None, help="Model version shown in scan results."),
    platt: bool = typer.Option(
        True,
        "--platt/--no-platt",
        help="Also fit Platt scaling on the same scores, so scans report a calibrated P(malicious) "
        "(the threshold is then on that scale; verdicts are the same either way).",
    ),
    dataset: Path = typer.Option(
        None,
        "--dataset",
        help="The dataset the report's files come from: also record how much of --protocol's held-out "
        "malware the threshold flags per decade of API calls, so scan can say when a benign verdict "
        "rests on a program that did little in the emulator.",
    ),
) -> None:
    """Choose the scan threshold (and, by default, a probability map) from out-of-fold evaluation scores
    and write calibration.json."""
    from runtrace.evaluate.thresholds import oof_scores, platt_scaling, strictest_threshold
    from runtrace.models.spec import CONFIG
    from runtrace.scan.calibration import ProbabilityMap, write_calibration

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
    chosen_representation = representation or own_representation
    try:
        protocols = list(dict.fromkeys([protocol.value, *(p.value for p in also)]))
        chosen = strictest_threshold(report, chosen_representation, protocols, target_fpr, model=name)
        fitted = (
            platt_scaling(*oof_scores(report, chosen_representation, protocol, model=name)) if platt else None
        )
    except ValueError as e:
        raise fail(f"{report}: {e}" if str(report) not in str(e) else str(e)) from None
    recall = None
    if dataset is not None:
        try:
            recall = _recall_table(
                report, dataset, chosen_representation, protocol.value, name, chosen.threshold
            )
        except ValueError as e:
            raise fail(str(e)) from None
    threshold, mapping = chosen.threshold, None
    if fitted is not None:
        mapping = ProbabilityMap(fitted.slope, fitted.intercept, f"the same scores ({protocol})")
        threshold = mapping(chosen.threshold)
    written = write_calibration(model, threshold, target_fpr, chosen.source, version, mapping, recall)
    console.print(f"threshold {threshold:.6g} for FPR <= {target_fpr:g}: {chosen.source}")
    if recall is not None:
        console.print(
            "flagged at it, by API calls: "
            + "; ".join(f"{b.describe()}: {b.flagged} of {b.malicious}" for b in recall.bins)
        )
    if fitted is not None:
        console.print(
            f"P(malicious) = sigmoid({fitted.slope:.4g} * logit(score) + {fitted.intercept:.4g}): log loss "
            f"{fitted.log_loss_before:.3f} as scored, {fitted.log_loss_after:.3f} mapped (each fold by a fit "
            f"on the others); the raw threshold {chosen.threshold:.6g} maps to {threshold:.6g}"
        )
    console.print(f"written to {written}")


def _recall_table(
    report: Path, dataset: Path, representation: str, protocol: str, model: str, threshold: float
):
    """How much of the protocol's held-out malware scores at or above the (raw) threshold, per decade of
    API calls, the calls read from the dataset's files."""
    from runtrace.evaluate.activity import recall_by_api_calls
    from runtrace.evaluate.thresholds import oof_files
    from runtrace.represent.dataset import DatasetError, SequenceDataset
    from runtrace.scan.calibration import RecallBin, RecallByApiCalls

    try:
        files = SequenceDataset.load(dataset).files
    except DatasetError as e:
        raise ValueError(str(e)) from None
    if "n_api_calls" not in files.column_names:
        raise ValueError(f"{dataset}: the dataset's files have no n_api_calls column")
    calls = dict(
        zip(files.column("sha256").to_pylist(), files.column("n_api_calls").to_pylist(), strict=True)
    )
    shas, y, score = oof_files(report, representation, protocol, model)
    missing = [s for s in shas if calls.get(s) is None]
    if missing:
        raise ValueError(
            f"{dataset}: {len(missing)} of the {protocol} files scored in {report} are not in it"
        )
    bins = recall_by_api_calls(y, score, [calls[s] for s in shas], threshold)
    source = (
        f"out-of-fold {representation} {model} scores ({protocol}, {int(y.sum())} malicious files) in "
        f"{Path(report).name}, at the threshold; API calls from {Path(dataset).name}"
    )
    return RecallByApiCalls(tuple(RecallBin(**b) for b in bins), source)
