"""Write a run's report: `report.md`, `metrics.json`, `predictions.parquet` and PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from runtrace.evaluate import plots
from runtrace.evaluate.protocols import sha256_column
from runtrace.evaluate.report_markdown import render_markdown, view_keys
from runtrace.evaluate.runner import EvaluationRun, per_file
from runtrace.evaluate.schema import EvaluationResults
from runtrace.evaluate.summary import summarise


def _write_plots(
    result: EvaluationRun, results: EvaluationResults, out: Path, keys: dict[str, str]
) -> dict[tuple, list[str]]:
    """Curves and histograms need every file's score (the run's predictions); the confusion matrices
    show the counts the typed results hold."""
    made: dict[tuple, list[str]] = {}
    for run in result.runs:
        if not run.predictions:
            continue
        key = keys[run.dataset]
        stem = out / "plots" / f"{key}-{run.protocol}"
        title = f"{key} {run.protocol}, per file"
        curves, confusions, histograms = [], [], []
        for name, pred in run.predictions.items():
            _, y, score, _ = per_file(run, pred)
            curves.append((name, y, score))
            confusions.append((name, results.result(run.dataset, run.protocol, name).per_file.counts))
            histograms.append((name, y, score, np.asarray([f.threshold for f in pred.folds])))
        paths = [
            plots.roc_plot(curves, Path(f"{stem}-roc.png"), title),
            plots.confusion_grid(confusions, Path(f"{stem}-confusion.png"), title),
            plots.score_histograms(histograms, Path(f"{stem}-scores.png"), title),
        ]
        for name, pred in run.predictions.items():
            histories = [f.history for f in pred.folds if f.history]
            if histories:
                p = plots.training_curves(
                    histories, Path(f"{stem}-{name}-training.png"), f"{key} {run.protocol} {name}"
                )
                if p:
                    paths.append(p)
        made[(run.dataset, run.protocol)] = [str(p.relative_to(out)) for p in paths]
    return made


def _write_predictions(result: EvaluationRun, path: Path) -> None:
    columns: dict[str, list] = {
        k: []
        for k in (
            "dataset",
            "representation",
            "protocol",
            "model",
            "unit",
            "row",
            "sha256",
            "window_start",
            "label",
            "fold",
            "score",
            "threshold",
            "decision",
        )
    }
    for run in result.runs:
        shas = sha256_column(run.data)
        n = len(run.labels)
        file_rows = run.parent if run.parent is not None else np.arange(n)
        starts = run.window_start.tolist() if run.window_start is not None else [None] * n
        for name, pred in run.predictions.items():
            # Only rows some fold tested: by-family and temporal leave some out (never scored).
            tested = np.flatnonzero(pred.fold >= 0)
            m = len(tested)
            columns["dataset"] += [run.dataset] * m
            columns["representation"] += [run.representation] * m
            columns["protocol"] += [run.protocol] * m
            columns["model"] += [name] * m
            columns["unit"] += [run.unit] * m
            columns["row"] += tested.tolist()
            columns["sha256"] += shas[file_rows[tested]].tolist()
            columns["window_start"] += [starts[i] for i in tested]
            columns["label"] += run.labels[tested].tolist()
            columns["fold"] += pred.fold[tested].tolist()
            columns["score"] += pred.score[tested].tolist()
            columns["threshold"] += pred.threshold[tested].tolist()
            columns["decision"] += pred.decision[tested].tolist()
    pq.write_table(pa.table(columns), path)


def write_report(
    result: EvaluationRun,
    out_dir: Path,
    command: str,
    n_resamples: int = 1000,
    seed: int = 0,
    manifest_sha256: str | None = None,
) -> tuple[EvaluationResults, dict[str, Path]]:
    """Compute the typed results and write every artefact of the run under `out_dir`.

    `manifest_sha256`: hash of the corpus manifest the datasets were joined with, when one was given."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = summarise(result, out_dir.name, command, n_resamples, seed, manifest_sha256)
    keys = view_keys(results)
    plot_paths = _write_plots(result, results, out_dir, keys)
    paths = {
        "report": out_dir / "report.md",
        "metrics": results.write(out_dir / "metrics.json"),
        "predictions": out_dir / "predictions.parquet",
    }
    _write_predictions(result, paths["predictions"])
    paths["report"].write_text(render_markdown(results, plot_paths, keys))
    return results, paths
