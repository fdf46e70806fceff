"""PNG figures for the report.  Matplotlib runs headless (Agg): reports are made on servers and in CI."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)
import numpy as np  # noqa: E402

from runtrace.evaluate.metrics import roc_curve_points  # noqa: E402
from runtrace.evaluate.result_document import Counts  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def roc_plot(curves: list[tuple[str, np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """ROC curves of several models on the same files, with a log-scaled FPR panel beside the linear one
    because the low-FPR corner is where a deployed detector lives."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for label, y, score in curves:
        fpr, tpr, _ = roc_curve_points(y, score)
        for ax in axes:
            ax.step(fpr, tpr, where="post", label=label)
    axes[0].plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes[0].set_xlim(0, 1)
    axes[1].set_xscale("symlog", linthresh=1e-3)
    axes[1].set_xlim(0, 1)
    for ax, name in zip(axes, ("linear FPR", "log FPR"), strict=True):
        ax.set_xlabel(f"false-positive rate ({name})")
        ax.set_ylabel("true-positive rate")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def confusion_grid(panels: list[tuple[str, Counts]], path: Path, title: str) -> Path:
    """One confusion matrix per model, side by side (one figure per protocol keeps reports quick)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.3), squeeze=False)
    for ax, (name, counts) in zip(axes[0], panels, strict=True):
        matrix = np.array([[counts.tn, counts.fp], [counts.fn, counts.tp]])
        ax.imshow(matrix, cmap="Blues")
        for (r, c), v in np.ndenumerate(matrix):
            ax.text(c, r, str(v), ha="center", va="center", color="black", fontsize=11)
        ax.set_xticks([0, 1], ["benign", "malicious"])
        ax.set_yticks([0, 1], ["benign", "malicious"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name, fontsize=9)
    fig.suptitle(title)
    return _save(fig, path)


def score_histograms(
    panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: Path, title: str
) -> Path:
    """Per model: scores of benign and malicious files, with the fold thresholds dashed."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3), squeeze=False)
    for ax, (name, y, score, thresholds) in zip(axes[0], panels, strict=True):
        bins = np.linspace(0, 1, 41) if score.min() >= 0 and score.max() <= 1 else 40
        for cls, label, color in ((0, "benign", "tab:blue"), (1, "malicious", "tab:red")):
            ax.hist(
                score[y == cls],
                bins=bins,
                alpha=0.55,
                label=f"{label} (n={int(np.sum(y == cls))})",
                color=color,
            )
        for t in np.unique(thresholds[~np.isnan(thresholds)]):
            ax.axvline(t, color="black", linestyle="--", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("score P(malicious)")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("files")
    fig.suptitle(f"{title}; dashed: fold thresholds")
    return _save(fig, path)


def training_curves(histories: list[list[dict]], path: Path, title: str) -> Path | None:
    """One panel per logged quantity, one line per fold; None when nothing numeric was logged."""
    keys = sorted(
        {
            k
            for h in histories
            for epoch in h
            for k, v in epoch.items()
            if k != "epoch" and isinstance(v, int | float)
        }
    )
    if not keys:
        return None
    keys = keys[:6]
    n_cols = min(3, len(keys))
    n_rows = -(-len(keys) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.8 * n_cols, 3.0 * n_rows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for fold, history in enumerate(histories):
            xs = [e.get("epoch", i) for i, e in enumerate(history) if key in e]
            ys = [e[key] for e in history if key in e]
            ax.plot(xs, ys, marker=".", label=f"fold {fold + 1}")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)
