"""Builds the result document (`result_document.EvaluationResults`, what every report reads) from an
evaluation run's out-of-fold predictions: per file first, per slice, per fold, and (leaky protocol only)
per window beside them."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import platform
from importlib import metadata

import numpy as np

from runtrace.evaluate import lineage
from runtrace.evaluate.activity import API_CALL_EDGES
from runtrace.evaluate.metrics import file_metrics, point_metrics, window_point_metrics
from runtrace.evaluate.protocols import BY_FAMILY, TEMPORAL, origin_groups, sha256_column
from runtrace.evaluate.result_document import (
    FIXED_THRESHOLD,
    BenignFile,
    BootstrapSettings,
    DatasetInfo,
    EvaluationResults,
    FileMetrics,
    FoldResult,
    MachineInfo,
    ModelResult,
    ProtocolRunInfo,
    RunSettings,
    SliceMetrics,
)
from runtrace.evaluate.runner import EvaluationRun, Predictions, ProtocolRun, per_file
from runtrace.models.interface import SequenceData

SLICE_COLUMNS = ("arch", "kind", "stop_reason", "compiler")
# Trace length bins by decade of executed instructions: short traces are where emulation stopped early,
# and a detector that only works on long (or short) traces should show it here.
LENGTH_EDGES = (0, 1_000, 10_000, 100_000, 1_000_000, math.inf)
# (dimension, files column, bin edges) of the slices binned by a count.  API calls: how much a program
# did in the emulator; a detector that only finds the malware that shows its behaviour shows it there.
BINNED_SLICES = (
    ("trace length (instructions)", "n_instructions", LENGTH_EDGES),
    ("API calls", "n_api_calls", API_CALL_EDGES),
)


def _bin_label(lo: float, hi: float) -> str:
    def fmt(x: float) -> str:
        return f"{x:,.0f}"

    return f">= {fmt(lo)}" if hi == math.inf else f"{fmt(lo)}-{fmt(hi - 1)}"


def file_slices(files, rows: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """(dimension, value, mask over `rows`) for every slice with at least one file."""
    table = files.take(rows) if len(rows) != files.num_rows else files
    out = []
    for column in SLICE_COLUMNS:
        if column not in table.column_names:
            continue
        values = np.asarray(
            ["(missing)" if v is None else str(v).lower() for v in table.column(column).to_pylist()]
        )
        for value in sorted(set(values.tolist())):
            out.append((column, value, values == value))
    for dimension, column, edges in BINNED_SLICES:
        if column not in table.column_names:
            continue
        counts = np.asarray([np.nan if v is None else float(v) for v in table.column(column).to_pylist()])
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            mask = (counts >= lo) & (counts < hi)
            if mask.any():
                out.append((dimension, _bin_label(lo, hi), mask))
    return out


FAMILY_SLICES = 10  # by-family: recall is reported for this many of the largest families
FAMILY_DIMENSION = "family"
YEAR_DIMENSION = "first-seen year"
DATING_DIMENSION = "dated by"


def lineage_slices(run: ProtocolRun, rows: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """by-family: one slice per large family (its malicious files: recall); temporal: one per year of
    first sighting among the tested files, and one per dating rule (which follows the files' source: a
    rule only the test side has is a source the model never saw).  (dimension, value, mask over `rows`)."""
    if run.protocol == BY_FAMILY:
        fam = lineage.families(run.data)[rows]
        malicious = np.asarray(run.data.labels())[rows] == 1
        sizes = {}
        for f in fam[malicious]:
            if f:
                sizes[f] = sizes.get(f, 0) + 1
        largest = sorted(sizes, key=lambda f: (-sizes[f], f))[:FAMILY_SLICES]
        return [(FAMILY_DIMENSION, f, malicious & (fam == f)) for f in largest]
    if run.protocol == TEMPORAL:
        dates = lineage.first_seen(run.data)
        years = np.asarray([dates[i].year if dates[i] else -1 for i in rows])
        by_year = [(YEAR_DIMENSION, str(y), years == y) for y in sorted(set(years.tolist())) if y >= 0]
        if not lineage.has_column(run.data, lineage.DATED_BY):
            return by_year
        rules = np.asarray(lineage.dating_rules(run.data), dtype=object)[rows]
        return by_year + [(DATING_DIMENSION, r, rules == r) for r in sorted(set(rules.tolist()))]
    return []


def _fold_figures(run: ProtocolRun, pred: Predictions) -> list[FoldResult]:
    out = []
    for record in pred.folds:
        rows = record.test_rows
        figures = point_metrics(run.labels[rows], pred.score[rows], pred.decision[rows])
        out.append(
            FoldResult(
                fold=record.index,
                n_train=record.n_train,
                n_test=record.n_test,
                threshold=record.threshold,
                threshold_source=record.threshold_source,
                fit_seconds=round(record.fit_seconds, 3),
                unit=run.unit,
                features=record.features,
                shared_code=record.shared_code,
                **{k: (None if np.isnan(v) else v) for k, v in figures.items()},
            )
        )
    return out


TOP_BENIGN = 5  # held-out benign files listed per model: the ones that set a low-FPR threshold
TRAIT_COLUMNS = ("kind", "arch", "compiler")


def top_benign(data: SequenceData, rows: np.ndarray, y: np.ndarray, score: np.ndarray) -> list[BenignFile]:
    """The `TOP_BENIGN` benign files among `rows` with the highest scores (ties by sha256)."""
    shas, groups = sha256_column(data), origin_groups(data)
    traits = {c: data.files.column(c).to_pylist() for c in TRAIT_COLUMNS if c in data.files.column_names}
    benign = [(float(s), shas[r], int(r)) for r, label, s in zip(rows, y, score, strict=True) if label == 0]
    chosen = sorted(benign, key=lambda t: (-t[0], t[1]))[:TOP_BENIGN]
    return [
        BenignFile(
            sha256=sha,
            score=s,
            group=str(groups[r]),
            traits={c: str(v[r]) for c, v in traits.items() if v[r] is not None},
        )
        for s, sha, r in chosen
    ]


def model_result(run: ProtocolRun, pred: Predictions, n_resamples: int, seed: int) -> ModelResult:
    rows, y, score, decision = per_file(run, pred)

    def figures(decided: np.ndarray, mask: np.ndarray | None = None) -> FileMetrics:
        if mask is None:
            return file_metrics(y, score, decided, n_resamples=n_resamples, seed=seed)
        return file_metrics(y[mask], score[mask], decided[mask], n_resamples=n_resamples, seed=seed)

    per_window, aggregation = None, None
    if run.unit == "window":
        per_window = window_point_metrics(run.labels, pred.score, pred.decision)
        aggregation = "mean window score; flagged when at least half its windows are"
    return ModelResult(
        dataset=run.dataset,
        representation=run.representation,
        protocol=run.protocol,
        model=pred.model,
        per_file=figures(decision),
        # The paper reports accuracy without saying how its threshold was set; a fixed 0.5 needs no
        # fitting (so it snoops nothing) and is the closest like-for-like figure.
        per_file_at_fixed=figures(score >= FIXED_THRESHOLD),
        folds=_fold_figures(run, pred),
        slices=[
            SliceMetrics.of(dimension, value, figures(decision, mask))
            for dimension, value, mask in file_slices(run.data.files, rows) + lineage_slices(run, rows)
        ],
        per_window=per_window,
        per_file_aggregation=aggregation,
        top_benign=top_benign(run.data, rows, y, score),
    )


def labelled_files_fingerprint(data: SequenceData) -> str:
    """sha256 over the sorted (sha256, label) pairs: names the labelled file set, whatever the row order
    (`DatasetInfo.fingerprint`).  Not `fold_store.dataset_content_hash`, which also covers the metadata
    and the lexicon."""
    pairs = sorted(f"{s}:{int(y)}" for s, y in zip(sha256_column(data), data.labels(), strict=True))
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()


def machine_info() -> MachineInfo:
    versions = {}
    for package in ("numpy", "scikit-learn", "lightgbm", "torch", "pyarrow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return MachineInfo(
        platform=platform.platform(),
        machine=platform.machine(),
        python=platform.python_version(),
        cpu_count=os.cpu_count(),
        packages=versions,
    )


def _datasets(result: EvaluationRun, manifest_sha256: str | None) -> list[DatasetInfo]:
    data_by_name = {}
    for run in result.runs:
        data_by_name.setdefault(run.dataset, run.data)
    out = []
    for d in result.datasets:
        data = data_by_name.get(d["name"])
        extra = {}
        if data is not None:
            y = np.asarray(data.labels())
            extra = dict(
                malicious=int(np.sum(y == 1)),
                benign=int(np.sum(y == 0)),
                fingerprint=labelled_files_fingerprint(data),
                manifest_sha256=manifest_sha256,
            )
        out.append(DatasetInfo(**{**d, **extra}))
    return out


def build_results(
    result: EvaluationRun,
    run_name: str,
    command: str,
    n_resamples: int = 1000,
    seed: int = 0,
    manifest_sha256: str | None = None,
) -> EvaluationResults:
    """Every figure of the run, typed.  `manifest_sha256`: hash of the corpus manifest the datasets
    were joined with, when one was given."""
    config = dict(vars(result.config))
    config["window"] = config["window"] or "lstm defaults"
    return EvaluationResults(
        run=run_name,
        command=command,
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        machine=machine_info(),
        config=RunSettings(**config),
        datasets=_datasets(result, manifest_sha256),
        bootstrap=BootstrapSettings(n_resamples=n_resamples, seed=seed, confidence=0.95, stratified=True),
        protocol_runs=[
            ProtocolRunInfo(
                dataset=run.dataset,
                representation=run.representation,
                protocol=run.protocol,
                unit=run.unit,
                n_folds=run.n_folds,
                window=run.window,
                notes=run.notes,
                skipped_models=run.skipped,
                info=run.info,
            )
            for run in result.runs
        ],
        skipped_protocols=result.skipped,
        results=[
            model_result(run, pred, n_resamples, seed)
            for run in result.runs
            for pred in run.predictions.values()
        ],
    )
