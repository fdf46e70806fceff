"""Run models x protocols on the same folds, collecting out-of-fold scores and decisions.

For every fold a fresh model is fitted on the training rows and scores the test rows.  Its decision
threshold comes from the training fold alone: out-of-fold scores of an inner cross-validation of the
training fold, or scores on a held-out part of it (then the model fitted without that part scores the
test fold).  Models see data through a guarded view, so touching a test row while fitting is an error.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from runtrace.evaluate import protocols as P
from runtrace.evaluate.fold_store import FoldStore, dataset_content_hash
from runtrace.evaluate.guard import GuardedView, LeakError
from runtrace.evaluate.names import (
    AUTO,
    DEFAULT_FAMILY_CAP,
    DEFAULT_FOLDS,
    DEFAULT_SEED,
    DEFAULT_TARGET_FPR,
    HOLDOUT,
    INNER_CV,
)
from runtrace.evaluate.registry import BuildContext, ModelSpec, ModelUnavailable
from runtrace.evaluate.thresholds import FALLBACK_THRESHOLD, threshold_for_fpr
from runtrace.evaluate.windows import WindowView
from runtrace.models.interface import FileClassifier, SequenceData
from runtrace.models.windowing import resolve_window_config
from runtrace.represent.windows import WindowConfig


@dataclass
class RunConfig:
    folds: int = DEFAULT_FOLDS
    seed: int = DEFAULT_SEED
    target_fpr: float = DEFAULT_TARGET_FPR
    threshold_fit: str = AUTO  # auto (each model's default), inner-cv or holdout
    inner_folds: int = 3  # inner cross-validation of a training fold, for thresholds
    holdout_folds: int = 5  # holdout keeps 1/holdout_folds of the training fold aside
    # Leaky protocol windows: the LSTM's own settings for the dataset, with these fields replaced
    # (mode, length, count, ...).
    window: dict = field(default_factory=dict)
    guard: bool = True
    model_options: dict = field(default_factory=dict)  # per model name: keyword arguments for its builder
    family_cap: int = DEFAULT_FAMILY_CAP  # by-family: most files any one family keeps (0: no cap)
    temporal_cut: str | None = None  # temporal: the cut date (YYYY-MM-DD); None chooses one


@dataclass
class FoldRecord:
    index: int
    n_train: int
    n_test: int
    threshold: float
    threshold_source: str
    fit_seconds: float
    test_rows: np.ndarray
    history: list[dict] | None = None  # per-epoch figures when the model logged them
    features: list[str] | None = None  # the metadata columns a metadata model found (features_available_)
    # Toolchain ablation (models.shared_code): blocks removed, shares of the training and test files
    # they took (`shared_code_`).
    shared_code: dict | None = None


@dataclass
class Predictions:
    """Out-of-fold results of one model under one protocol, per row of the evaluated view."""

    model: str
    score: np.ndarray
    decision: np.ndarray  # score >= the threshold of the row's fold
    fold: np.ndarray
    threshold: np.ndarray
    folds: list[FoldRecord]


@dataclass
class ProtocolRun:
    """One protocol on one dataset: the folds, and every model's predictions on them."""

    dataset: str
    representation: str
    protocol: str
    unit: str  # "file" or "window"
    data: SequenceData  # the file-level dataset
    labels: np.ndarray  # per row of the evaluated view
    parent: np.ndarray | None  # window -> file row, leaky protocol only
    window_start: np.ndarray | None  # window -> first token's position in its file, leaky protocol only
    window: dict | None  # the window settings, leaky protocol only
    n_folds: int
    notes: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # the plan's account of its split (cut, family cap, ...)
    predictions: dict[str, Predictions] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why it did not run


@dataclass
class EvaluationRun:
    config: RunConfig
    datasets: list[dict]
    runs: list[ProtocolRun] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # protocols that could not be formed, with why


def _view(data: SequenceData, rows: np.ndarray, purpose: str, guard: bool) -> SequenceData:
    return GuardedView(data, rows, purpose) if guard else data


def _fit(spec: ModelSpec, ctx: BuildContext, data: SequenceData, rows: np.ndarray, guard: bool):
    model = spec.build(ctx)
    model.fit(_view(data, rows, "fit", guard), rows)
    return model


def _score(model: FileClassifier, data: SequenceData, rows: np.ndarray, guard: bool) -> np.ndarray:
    scores = np.asarray(model.predict_proba(_view(data, rows, "predict", guard), rows), dtype=np.float64)
    if scores.shape != (len(rows),):
        raise ValueError(f"predict_proba returned shape {scores.shape}, expected ({len(rows)},)")
    if np.isnan(scores).any():
        raise ValueError("predict_proba returned NaN scores")
    return scores


def _threshold(y: np.ndarray, scores: np.ndarray, config: RunConfig, source: str) -> tuple[float, str]:
    if not np.any(y == 0):
        # A grouped inner split can leave no benign file aside; say so rather than invent a threshold.
        return FALLBACK_THRESHOLD, f"fixed {FALLBACK_THRESHOLD}: no benign file among the {source} scores"
    return threshold_for_fpr(y, scores, config.target_fpr), source


def run_fold(
    spec: ModelSpec,
    ctx: BuildContext,
    data: SequenceData,
    protocol: str,
    fold: P.Fold,
    config: RunConfig,
) -> tuple[np.ndarray, FoldRecord]:
    """Fit on fold.train, choose the threshold on training scores only, score fold.test."""
    strategy = spec.threshold_fit if config.threshold_fit == AUTO else config.threshold_fit
    y = np.asarray(data.labels(), dtype=np.int64)
    inner_seed = config.seed + 1000 + fold.index
    started = time.perf_counter()
    threshold, source = FALLBACK_THRESHOLD, ""
    model = None
    if strategy == INNER_CV:
        splits = P.inner_splits(protocol, data, fold.train, config.inner_folds, inner_seed)
        if splits:
            oof_rows = np.concatenate([val for _, val in splits])
            oof = np.concatenate(
                [
                    _score(_fit(spec, ctx, data, fit_rows, config.guard), data, val, config.guard)
                    for fit_rows, val in splits
                ]
            )
            threshold, source = _threshold(y[oof_rows], oof, config, f"inner-cv ({len(splits)} folds)")
        model = _fit(spec, ctx, data, fold.train, config.guard)
    elif strategy == HOLDOUT:
        splits = P.inner_splits(protocol, data, fold.train, config.holdout_folds, inner_seed)
        if splits:
            fit_rows, val = splits[0]
            model = _fit(spec, ctx, data, fit_rows, config.guard)
            val_scores = _score(model, data, val, config.guard)
            threshold, source = _threshold(y[val], val_scores, config, f"holdout ({len(val)} training rows)")
        else:
            model = _fit(spec, ctx, data, fold.train, config.guard)
    else:
        raise ValueError(f"unknown threshold strategy {strategy!r}")
    if not source:
        source = f"fixed {FALLBACK_THRESHOLD}: training fold too small to split for a threshold"
    scores = _score(model, data, fold.test, config.guard)
    history = getattr(model, "history_", None)
    record = FoldRecord(
        index=fold.index,
        n_train=len(fold.train),
        n_test=len(fold.test),
        threshold=float(threshold),
        threshold_source=source,
        fit_seconds=time.perf_counter() - started,
        test_rows=fold.test,
        history=list(history) if history else None,
        features=getattr(model, "features_available_", None),
        shared_code=getattr(model, "shared_code_", None),
    )
    return scores, record


def _plan(protocol: str, data: SequenceData, config: RunConfig) -> tuple[P.Plan, SequenceData]:
    if protocol == P.LEAKY:
        base = resolve_window_config(None, data)
        windows = WindowView(data, WindowConfig.from_json({**base.to_json(), **config.window}))
        plan = P.leaky(windows, config.folds, config.seed)
        n_files = len(data.labels())
        plan.notes.append(f"leaky: {len(windows)} windows from {n_files} files")
        if len(windows) == n_files:
            plan.notes.append(
                "leaky: every file is a single window at these settings (traces no longer than a window), "
                "so the leaky split is a split by file here and cannot show inflation"
            )
        return plan, windows
    if protocol == P.BY_FILE:
        return P.by_file(data, config.folds, config.seed), data
    if protocol == P.BY_ORIGIN:
        return P.by_origin(data, config.folds, config.seed), data
    if protocol == P.BY_FAMILY:
        return P.by_family(data, config.folds, config.seed, config.family_cap), data
    if protocol == P.TEMPORAL:
        cut = dt.date.fromisoformat(config.temporal_cut) if config.temporal_cut else None
        return P.temporal(data, cut), data
    raise ValueError(f"unknown protocol {protocol!r}")


def _run_model(
    spec: ModelSpec,
    ctx: BuildContext,
    view: SequenceData,
    plan: P.Plan,
    config: RunConfig,
    progress: Progress,
    task,
    records: list[FoldRecord],
    store: FoldStore | None = None,
) -> Predictions:
    n = len(view.labels())
    score, fold_of, threshold = np.zeros(n), np.full(n, -1), np.full(n, np.nan)
    for fold in plan.folds:
        where = f"{view.representation} {plan.protocol} {spec.name}"
        progress.update(task, description=f"{where} fold {fold.index + 1}/{len(plan.folds)}")
        saved = store.load(fold.index, FoldRecord) if store is not None else None
        if saved is not None and np.array_equal(saved[1].test_rows, fold.test):
            fold_scores, record = saved
        else:
            fold_scores, record = run_fold(spec, ctx, view, plan.protocol, fold, config)
            if store is not None:
                store.save(fold.index, fold_scores, record)
        score[fold.test] = fold_scores
        fold_of[fold.test] = fold.index
        threshold[fold.test] = record.threshold
        records.append(record)
        progress.advance(task)
    return Predictions(spec.name, score, score >= threshold, fold_of, threshold, records)


def run_evaluation(
    datasets: list[tuple[str, SequenceData]],
    models: list[ModelSpec],
    protocols: list[str],
    config: RunConfig | None = None,
    show_progress: bool = True,
    checkpoint_dir: Path | None = None,
) -> EvaluationRun:
    """Every model under every protocol on every dataset; the folds of a protocol are shared by all
    models (and, through sha256-keyed assignment, by datasets built from the same files).

    With `checkpoint_dir`, each finished fold is saved there and a fold saved by an earlier run with
    the same dataset and settings is read back instead of fitted again (resume after an interruption)."""
    config = config or RunConfig()
    result = EvaluationRun(
        config=config,
        datasets=[
            {
                "name": name,
                "representation": d.representation,
                "files": len(d.labels()),
                "lexicon": len(d.lexicon),
            }
            for name, d in datasets
        ],
    )
    planned = []
    for name, data in datasets:
        for protocol in protocols:
            try:
                plan, view = _plan(protocol, data, config)
            except P.ProtocolError as e:
                result.skipped.append(f"{name} ({data.representation}): {e}")
                continue
            P.check_plan(plan, view)
            planned.append((name, data, plan, view))

    total = sum(len(plan.folds) for *_, plan, _ in planned) * len(models)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not show_progress, transient=False) as progress:
        task = progress.add_task("evaluating", total=total)
        for name, data, plan, view in planned:
            content_hash = dataset_content_hash(data) if checkpoint_dir is not None else ""
            labels = np.asarray(view.labels(), dtype=np.int64)
            run = ProtocolRun(
                dataset=name,
                representation=data.representation,
                protocol=plan.protocol,
                unit=plan.unit,
                data=data,
                labels=labels,
                parent=view.parent if isinstance(view, WindowView) else None,
                window_start=view.start if isinstance(view, WindowView) else None,
                window=view.config.to_json() if isinstance(view, WindowView) else None,
                n_folds=len(plan.folds),
                notes=list(plan.notes),
                info=dict(plan.info),
            )
            # Caches (n-gram counts) are shared by every model and fold on this view, never beyond it.
            shared: dict = {}
            for spec in models:
                ctx = BuildContext(
                    data.representation,
                    plan.protocol,
                    config.seed,
                    shared,
                    config.model_options.get(spec.name, {}),
                )
                done = []  # fold records, kept outside so a failure knows how far it got
                store = None
                if checkpoint_dir is not None:
                    store = FoldStore(checkpoint_dir, content_hash, plan.protocol, spec.name, config)
                try:
                    run.predictions[spec.name] = _run_model(
                        spec, ctx, view, plan, config, progress, task, done, store
                    )
                except LeakError:
                    raise  # never a footnote: a model that reads test rows invalidates the run
                except ModelUnavailable as e:
                    run.skipped[spec.name] = str(e)
                except Exception as e:  # noqa: BLE001 - one failing model must not lose the others' hours
                    run.skipped[spec.name] = f"failed in fold {len(done) + 1}: {type(e).__name__}: {e}"
                progress.advance(task, len(plan.folds) - len(done) if spec.name in run.skipped else 0)
            result.runs.append(run)
    return result


def per_file(run: ProtocolRun, pred: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(file rows, labels, scores, decisions) per file that was tested.

    Under the leaky protocol a file's windows were scored in several folds; its score is the mean of its
    window scores and it is flagged when at least half its windows were.  Under by-family and temporal
    some files are never tested (over the family cap, undated, or training data before the cut): they
    are not in the figures.
    """
    if run.parent is None:
        rows = np.flatnonzero(pred.fold >= 0)
        return rows, run.labels[rows], pred.score[rows], pred.decision[rows]
    n_files = len(run.data.labels())
    counts = np.bincount(run.parent, minlength=n_files)
    rows = np.flatnonzero(counts)
    score = np.bincount(run.parent, weights=pred.score, minlength=n_files)[rows] / counts[rows]
    flagged = np.bincount(run.parent, weights=pred.decision.astype(np.float64), minlength=n_files)[rows]
    labels = np.asarray(run.data.labels(), dtype=np.int64)[rows]
    return rows, labels, score, flagged * 2 >= counts[rows]
