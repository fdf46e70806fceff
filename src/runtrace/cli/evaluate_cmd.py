"""`runtrace evaluate`: models x protocols on the same folds, per-file metrics with intervals, a report."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import typer
from rich.table import Table

from runtrace.cli.app import INTERRUPTED, app, console, err_console, fail
from runtrace.cli.choices import Device, ProtocolOrAll, RepresentationOrAll, ThresholdFit

ALL = "all"


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _console_summary(results) -> Table:
    """The run's per-file figures from its typed results (runtrace.evaluate.schema)."""
    table = Table(
        title=f"per-file results at thresholds fitted on the training folds for FPR "
        f"{100 * results.config.target_fpr:g} % (95 % bootstrap intervals in metrics.json and report.md)"
    )
    for col in ("data", "protocol", "model", "accuracy", "FPR", "TPR", "ROC-AUC", "TP/FP/TN/FN"):
        table.add_column(col, justify="left" if col in ("data", "protocol", "model") else "right")

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f} %"

    for e in results.results:
        m, c = e.per_file, e.per_file.counts
        auc = m["roc_auc"].value
        table.add_row(
            e.representation,
            e.protocol,
            e.model,
            pct(m["accuracy"].value),
            pct(m["fpr"].value),
            pct(m["tpr"].value),
            "n/a" if auc is None else f"{auc:.3f}",
            f"{c.tp}/{c.fp}/{c.tn}/{c.fn}",
        )
    return table


@app.command()
def evaluate(
    datasets: list[Path] = typer.Option(
        ..., "--dataset", "-d", help="Dataset directory (runtrace dataset build); repeat for ISM and BSM."
    ),
    representation: RepresentationOrAll = typer.Option(RepresentationOrAll.ALL, "--representation", "-r"),
    protocol: ProtocolOrAll = typer.Option(ProtocolOrAll.ALL, "--protocol", "-p"),
    models: str = typer.Option(
        "lstm,ngram-lr,ngram-lgbm,metadata", "--models", "-m", help="Comma-separated: lstm, ngram-lr, ..."
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Report directory, e.g. reports/RUN."),
    folds: int = typer.Option(5, help="k of the k-fold protocols."),
    seed: int = typer.Option(0, help="Seed of the folds, the models and the bootstrap."),
    target_fpr: float = typer.Option(0.01, help="FPR the decision threshold aims for (on training folds)."),
    threshold_fit: ThresholdFit = typer.Option(
        ThresholdFit.AUTO, help="How training-fold scores for the threshold are got (auto: per model)."
    ),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples per interval."),
    manifest: Path = typer.Option(
        None,
        help="Corpus manifest: joins PE metadata (shortcut audit, compiler slices) and families and "
        "first-seen dates (by-family, temporal).",
    ),
    family_cap: int = typer.Option(
        40, min=0, help="by-family: at most this many files per family, drawn at random (0: no cap)."
    ),
    temporal_cut: str = typer.Option(
        None, help="temporal: cut date YYYY-MM-DD (default: the month that best balances both classes)."
    ),
    window: int = typer.Option(None, help="Leaky protocol: window length (default: the LSTM's)."),
    windows_per_file: int = typer.Option(None, help="Leaky protocol: sampled windows per file."),
    lstm_epochs: int = typer.Option(None, help="LSTM: at most this many epochs (default: the model's)."),
    device: Device = typer.Option(Device.AUTO, help="LSTM: where to train."),
    threads: int = typer.Option(None, help="LSTM: torch CPU threads."),
    overwrite: bool = typer.Option(
        False, help="Start afresh: replace an existing report and forget folds saved by an earlier run."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    table: bool = typer.Option(True, "--table/--no-table", help="Print the results table when done."),
) -> None:
    """Evaluate detectors honestly: leaky, by-file, by-origin, by-family and temporal splits side by side,
    per-file metrics with bootstrap intervals, baselines and a metadata shortcut audit
    (docs/evaluation.md).  by-family and temporal need --manifest (families and first-seen dates).

    Each finished fold is saved under OUT/checkpoints as it goes; stopped (Ctrl-C, a crash) and run
    again with the same arguments, the evaluation skips the folds already done."""
    from runtrace.evaluate import checkpoints
    from runtrace.evaluate.protocols import PROTOCOLS
    from runtrace.evaluate.registry import resolve_models
    from runtrace.evaluate.report import write_report
    from runtrace.evaluate.runner import RunConfig, run_evaluation
    from runtrace.represent.dataset import DatasetError, SequenceDataset

    if folds < 2:
        raise fail("--folds must be at least 2")
    if not 0.0 <= target_fpr < 1.0:
        raise fail("--target-fpr must be in [0, 1)")
    if bootstrap < 0:
        raise fail("--bootstrap must be 0 or more")
    if temporal_cut is not None:
        import datetime as dt

        try:
            dt.date.fromisoformat(temporal_cut)
        except ValueError:
            raise fail(f"--temporal-cut {temporal_cut!r} is not a date (YYYY-MM-DD)") from None
    try:
        specs = resolve_models(_split_list(models))
    except KeyError as e:
        raise fail(e.args[0]) from None
    if not specs:
        raise fail("--models names no model")
    loaded = []
    for path in dict.fromkeys(datasets):
        try:
            data = SequenceDataset.load(path)
        except DatasetError as e:
            raise fail(str(e)) from None
        if representation in (ALL, data.representation):
            loaded.append((str(path), data))
    if not loaded:
        raise fail(f"no {representation.upper()} dataset among --dataset {' '.join(map(str, datasets))}")

    manifest_sha256 = None
    if manifest is not None:
        import hashlib

        from runtrace.corpus.manifest import ManifestError, read_manifest
        from runtrace.evaluate.manifest_join import join_manifest

        try:
            table = read_manifest(manifest)
            manifest_sha256 = hashlib.sha256(manifest.read_bytes()).hexdigest()
            for name, data in loaded:
                added, matched = join_manifest(data, table)
                err_console.print(
                    f"{name}: {matched} of {len(data)} files found in the manifest", highlight=False
                )
        except (ManifestError, ValueError) as e:
            raise fail(f"{manifest}: {e}") from None

    try:
        window_overrides = {"length": window, "count": windows_per_file}
        window_overrides = {k: v for k, v in window_overrides.items() if v is not None}
        lstm_options = {"device": device}
        if lstm_epochs is not None:
            lstm_options["epochs"] = lstm_epochs
        if threads is not None:
            lstm_options["num_threads"] = threads
        config = RunConfig(
            folds=folds,
            seed=seed,
            target_fpr=target_fpr,
            threshold_fit=threshold_fit,
            window=window_overrides,
            model_options={"lstm": lstm_options},
            family_cap=family_cap,
            temporal_cut=temporal_cut,
        )
        protocols = list(PROTOCOLS) if protocol == ALL else [protocol]
        saved = out / checkpoints.DIR_NAME
        key = checkpoints.run_key(
            [d for _, d in loaded], [s.name for s in specs], protocols, config,
            bootstrap=bootstrap, manifest=manifest_sha256,
        )  # fmt: skip
        if (out / "report.md").exists() and not overwrite:
            if checkpoints.finished_run(saved) == key:
                console.print(
                    f"{out / 'report.md'} is up to date (--overwrite evaluates again)",
                    highlight=False,
                    soft_wrap=True,
                )
                return
            raise fail(f"{out} already holds a report of another run (pass --overwrite to replace it)")
        if overwrite:
            shutil.rmtree(saved, ignore_errors=True)
        resumed = checkpoints.finished_folds(saved)
        if resumed:
            err_console.print(f"resuming: {resumed} folds done by an earlier run ({saved})", highlight=False)
        result = run_evaluation(
            loaded, specs, protocols, config, show_progress=progress, checkpoint_dir=saved
        )
    except ValueError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        raise fail(
            f"interrupted: {checkpoints.finished_folds(saved)} finished folds are saved in {saved}; "
            "run the same command again to resume (--overwrite starts afresh)",
            INTERRUPTED,
        ) from None

    for line in result.skipped:
        err_console.print(f"[yellow]not run:[/] {line}", highlight=False)
    for run in result.runs:
        for model, why in run.skipped.items():
            err_console.print(
                f"[yellow]not run:[/] {run.representation} {run.protocol} {model}: {why}", highlight=False
            )
    if not any(run.predictions for run in result.runs):
        raise fail("nothing could be evaluated (see the lines above)")

    command = "runtrace " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "runtrace evaluate"
    results, paths = write_report(
        result, out, command=command, n_resamples=bootstrap, seed=seed, manifest_sha256=manifest_sha256
    )
    if table:
        console.print(_console_summary(results))
    checkpoints.mark_finished(saved, key)
    console.print(f"report written to {paths['report']}", highlight=False)
