"""One model trained on every file of a dataset and saved: what `runtrace train` runs.

On one process, or on each rank under `torchrun` (`train.distributed_context`): every rank fits, rank 0
saves.  The ONNX graphs are written afterwards by `runtrace.models.export`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from runtrace.models.estimator import LstmClassifier
from runtrace.models.interface import SequenceData
from runtrace.models.train import distributed_context, shutdown_distributed


@dataclass(frozen=True)
class TrainingSummary:
    kind: str
    epochs: int
    best_epoch: int | None  # the epoch whose weights were kept (lowest validation loss)
    val_loss: float  # NaN without validation files
    val_auc: float
    tokens_per_s: float  # of the last epoch
    vocabulary: int  # instruction tokens
    blocks: int | None  # BSM with block ids: block keys
    processes: int  # torchrun's ranks (1: a single process)


def train_and_save(clf: LstmClassifier, data: SequenceData, out: str | os.PathLike) -> TrainingSummary | None:
    """Fit `clf` on every file of `data` (its validation split drawn from them) and save it to `out`;
    the summary on the process that saved, None on the other ranks."""
    ctx = distributed_context(clf.config.train.device)
    try:
        clf.fit(data, np.arange(len(data.labels())))
        if not ctx.is_main:
            return None
        clf.save(out)
    finally:
        shutdown_distributed()
    log = clf.training_log_
    last = log[-1] if log else {}
    best = min((h for h in log if "val_loss" in h), key=lambda h: h["val_loss"], default=last)
    return TrainingSummary(
        kind=clf.kind,
        epochs=len(log),
        best_epoch=best.get("epoch"),
        val_loss=best.get("val_loss", float("nan")),
        val_auc=best.get("val_auc", float("nan")),
        tokens_per_s=last.get("tokens_per_s", 0.0),
        vocabulary=len(clf.vocabulary_),
        blocks=len(clf.block_vocabulary_) if clf.block_vocabulary_ is not None else None,
        processes=ctx.world_size,
    )
