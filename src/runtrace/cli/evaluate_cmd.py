"""`runtrace evaluate`: models x protocols on the same folds, per-file metrics with intervals, a report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.table import Table

from runtrace.cli.app import INTERRUPTED, app, console, err_console, fail
from runtrace.cli.choices import Device, ProtocolOrAll, RepresentationOrAll, ThresholdFit
from runtrace.evaluate.names import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_FAMILY_CAP,
    DEFAULT_FOLDS,
    DEFAULT_SEED,
    DEFAULT_TARGET_FPR,
    NOSHARED_SUFFIX,
    PROTOCOLS,
)
from runtrace.models.names import DEFAULT_MIN_SHARE

ALL = "all"


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _console_summary(results) -> Table:
    """The run's per-file figures from its typed results (runtrace.evaluate.result_document)."""
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
        "lstm,ngram-lr,ngram-lgbm,metadata",
        "--models",
        "-m",
        help="Comma-separated: lstm, transformer, ngram-lr, ...",
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Report directory, e.g. reports/RUN."),
    folds: int = typer.Option(DEFAULT_FOLDS, help="k of the k-fold protocols."),
    seed: int = typer.Option(DEFAULT_SEED, help="Seed of the folds, the models and the bootstrap."),
    target_fpr: float = typer.Option(
        DEFAULT_TARGET_FPR, help="FPR the decision threshold aims for (on training folds)."
    ),
    threshold_fit: ThresholdFit = typer.Option(
        ThresholdFit.AUTO, help="How training-fold scores for the threshold are got (auto: per model)."
    ),
    bootstrap: int = typer.Option(DEFAULT_BOOTSTRAP, help="Bootstrap resamples per interval."),
    manifest: Path = typer.Option(
        None,
        help="Corpus manifest: joins PE metadata (shortcut audit, compiler slices) and families and "
        "first-seen dates (by-family, temporal).",
    ),
    family_cap: int = typer.Option(
        DEFAULT_FAMILY_CAP,
        min=0,
        help="by-family: at most this many files per family, drawn at random (0: no cap).",
    ),
    temporal_cut: str = typer.Option(
        None, help="temporal: cut date YYYY-MM-DD (default: the month that best balances both classes)."
    ),
    window: int = typer.Option(None, help="Leaky protocol: window length (default: the LSTM's)."),
    windows_per_file: int = typer.Option(None, help="Leaky protocol: sampled windows per file."),
    lstm_epochs: int = typer.Option(
        None, help="LSTM and transformer: at most this many epochs (default: the model's)."
    ),
    shared_min_share: float = typer.Option(
        None,
        help="Toolchain ablation (*-noshared models, BSM): remove the code blocks at least this share of "
        f"each class's training files executes (default {DEFAULT_MIN_SHARE}).",
    ),
    device: Device = typer.Option(Device.AUTO, help="LSTM and transformer: where to train."),
    threads: int = typer.Option(None, help="LSTM and transformer: torch CPU threads."),
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
    from runtrace.evaluate.manifest_join import join_manifest_file
    from runtrace.evaluate.registry import resolve_models
    from runtrace.evaluate.runner import RunConfig
    from runtrace.evaluate.session import EvaluationSession, load_datasets

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
    lstm_options = {"device": device}
    if lstm_epochs is not None:
        lstm_options["epochs"] = lstm_epochs
    if threads is not None:
        lstm_options["num_threads"] = threads
    if shared_min_share is not None and not 0.0 < shared_min_share <= 1.0:
        raise fail("--shared-min-share must be in (0, 1]")
    model_options = {"lstm": lstm_options, "transformer": lstm_options}
    for spec in specs:
        if spec.name.endswith(NOSHARED_SUFFIX):
            base = spec.name.removesuffix(NOSHARED_SUFFIX)
            options = dict(model_options.get(base, {}))
            if shared_min_share is not None:
                options["min_share"] = shared_min_share
            if options:  # (an empty entry would still change the saved folds' settings key)
                model_options[spec.name] = options
    window_overrides = {"length": window, "count": windows_per_file}
    config = RunConfig(
        folds=folds,
        seed=seed,
        target_fpr=target_fpr,
        threshold_fit=threshold_fit,
        window={k: v for k, v in window_overrides.items() if v is not None},
        model_options=model_options,
        family_cap=family_cap,
        temporal_cut=temporal_cut,
    )

    try:
        loaded = load_datasets(datasets, None if representation == ALL else representation)
        joined = join_manifest_file(loaded, manifest) if manifest is not None else None
    except ValueError as e:  # DatasetError, SessionError, an unreadable manifest
        raise fail(str(e)) from None
    for name, matched, total in joined.matched if joined else []:
        err_console.print(f"{name}: {matched} of {total} files found in the manifest", highlight=False)

    session = EvaluationSession(
        out,
        loaded,
        specs,
        list(PROTOCOLS) if protocol == ALL else [protocol],
        config,
        bootstrap=bootstrap,
        manifest_sha256=joined.sha256 if joined else None,
    )
    if not overwrite and session.up_to_date():
        console.print(
            f"{session.report} is up to date (--overwrite evaluates again)", highlight=False, soft_wrap=True
        )
        return
    try:
        resumed = session.start(overwrite)
        if resumed:
            err_console.print(
                f"resuming: {resumed} folds done by an earlier run ({session.checkpoint_dir})",
                highlight=False,
            )
        result = session.run(show_progress=progress)
    except ValueError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        raise fail(
            f"interrupted: {session.saved_folds()} finished folds are saved in {session.checkpoint_dir}; "
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
    results, paths = session.write(result, command)
    if table:
        console.print(_console_summary(results))
    console.print(f"report written to {paths['report']}", highlight=False)
