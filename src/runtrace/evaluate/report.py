"""Write a run's report: `report.md`, `metrics.json`, `predictions.parquet` and PNG plots."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from runtrace.evaluate import plots
from runtrace.evaluate.metrics import confusion_counts
from runtrace.evaluate.protocols import sha256_column
from runtrace.evaluate.report_markdown import render_markdown
from runtrace.evaluate.runner import EvaluationRun, per_file
from runtrace.evaluate.summary import summarise


def dataset_fingerprint(data) -> str:
    """sha256 over the sorted (sha256, label) pairs: names the labelled file set, whatever the row order."""
    pairs = sorted(f"{s}:{int(y)}" for s, y in zip(sha256_column(data), data.labels(), strict=True))
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()


def machine_info() -> dict:
    versions = {}
    for package in ("numpy", "scikit-learn", "lightgbm", "torch", "pyarrow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
    }


def _view_keys(result: EvaluationRun) -> dict[str, str]:
    """A short, unique name per dataset for headings and file names ("ism", or "ism-2" when repeated)."""
    keys, seen = {}, {}
    for d in result.datasets:
        rep = d["representation"]
        seen[rep] = seen.get(rep, 0) + 1
        keys[d["name"]] = rep if seen[rep] == 1 else f"{rep}-{seen[rep]}"
    return keys


def _write_plots(result: EvaluationRun, out: Path, keys: dict[str, str]) -> dict[tuple, list[str]]:
    made: dict[tuple, list[str]] = {}
    for run in result.runs:
        if not run.predictions:
            continue
        key = keys[run.dataset]
        stem = out / "plots" / f"{key}-{run.protocol}"
        title = f"{key} {run.protocol}, per file"
        curves, confusions, histograms = [], [], []
        for name, pred in run.predictions.items():
            _, y, score, decision = per_file(run, pred)
            curves.append((name, y, score))
            confusions.append((name, confusion_counts(y, decision)))
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
            columns["dataset"] += [run.dataset] * n
            columns["representation"] += [run.representation] * n
            columns["protocol"] += [run.protocol] * n
            columns["model"] += [name] * n
            columns["unit"] += [run.unit] * n
            columns["row"] += np.arange(n).tolist()
            columns["sha256"] += shas[file_rows].tolist()
            columns["window_start"] += list(starts)
            columns["label"] += run.labels.tolist()
            columns["fold"] += pred.fold.tolist()
            columns["score"] += pred.score.tolist()
            columns["threshold"] += pred.threshold.tolist()
            columns["decision"] += pred.decision.tolist()
    pq.write_table(pa.table(columns), path)


def write_report(
    result: EvaluationRun,
    out_dir: Path,
    command: str,
    n_resamples: int = 1000,
    seed: int = 0,
    manifest_sha256: str | None = None,
) -> dict[str, Path]:
    """Compute the summary and write every artefact of the run under `out_dir`.

    `manifest_sha256`: hash of the corpus manifest the datasets were joined with, when one was given."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    datasets_by_name = {}
    for run in result.runs:
        datasets_by_name.setdefault(run.dataset, run.data)
    for d in result.datasets:
        data = datasets_by_name.get(d["name"])
        if data is None:
            continue
        y = np.asarray(data.labels())
        d.update(
            malicious=int(np.sum(y == 1)),
            benign=int(np.sum(y == 0)),
            fingerprint=dataset_fingerprint(data),
            manifest_sha256=manifest_sha256,
        )
    summary = summarise(result, n_resamples=n_resamples, seed=seed)
    meta = {
        "run": out_dir.name,
        "command": command,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
    }
    keys = _view_keys(result)
    plot_paths = _write_plots(result, out_dir, keys)
    paths = {
        "report": out_dir / "report.md",
        "metrics": out_dir / "metrics.json",
        "predictions": out_dir / "predictions.parquet",
    }
    paths["metrics"].write_text(json.dumps({**meta, **summary}, indent=2, default=_json_default) + "\n")
    _write_predictions(result, paths["predictions"])
    paths["report"].write_text(render_markdown(result, summary, meta, plot_paths, keys))
    return paths


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if np.isnan(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
