"""One LSTM training run as an object the fit loop calls: its batches per epoch, its loss, and its
validation.  Windows are labelled with their file's label; with attention aggregation whole files are
batched and pooled, so the loss is per file."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from runtrace.models.aggregation import aggregate_windows
from runtrace.models.batching import WindowEncoder, WindowStore, file_batches, length_batches
from runtrace.models.hyperparameters import TrainConfig
from runtrace.models.layers import attention_pool
from runtrace.models.train import Batch, DistContext, binary_metrics, gather_objects, rank_share
from runtrace.models.weights import class_weight, window_weights


class EpochBatches:
    """A sized, lazily built list of batches (the loop shows progress against its length)."""

    def __init__(self, plan: list[np.ndarray], make) -> None:
        self.plan, self.make = plan, make

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self):
        return (self.make(item) for item in self.plan)


@torch.no_grad()
def window_outputs(
    net: nn.Module,
    encoder: WindowEncoder,
    store: WindowStore,
    device: torch.device,
    batch_size: int,
    scored: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits (and, when `scored`, attention scores) of every stored window, in store order."""
    was_training = net.training
    net.eval()
    logits = np.zeros(len(store), dtype=np.float64)
    scores = np.zeros(len(store), dtype=np.float64) if scored else None
    for positions in length_batches(store.windows.lengths, batch_size, None, bucket=True):
        inputs, order = encoder.encode(store, positions, device)
        out_logits, out_scores = net(**inputs)
        logits[order] = out_logits.float().cpu().numpy()
        if scores is not None and out_scores is not None:
            scores[order] = out_scores.float().cpu().numpy()
    net.train(was_training)
    return logits, scores


class WindowTraining:
    """Training on `fit`'s windows, early-stopped on `val`'s (file-level figures when units is "file")."""

    def __init__(
        self,
        fit: WindowStore,
        val: WindowStore,
        labels: np.ndarray,
        encoder: WindowEncoder,
        aggregation: str,
        units: str,
        config: TrainConfig,
        ctx: DistContext,
        predict_batch_size: int,
    ) -> None:
        self.fit, self.val, self.labels, self.encoder = fit, val, labels, encoder
        self.aggregation, self.units, self.config, self.ctx = aggregation, units, config, ctx
        self.predict_batch_size = predict_batch_size
        self.attention = aggregation == "attention" and units == "file"
        windows = fit.windows
        file_balanced = config.file_balanced and units == "file"
        self.weights = window_weights(labels, windows, file_balanced, config.class_weight)
        self.file_class_weight = class_weight(labels[np.unique(windows.file_index)], config.class_weight)
        self.window_labels = labels[windows.file_index].astype(np.float32)

    @property
    def validates(self) -> bool:
        return len(self.val) > 0

    def batches(self, epoch: int) -> EpochBatches:
        """This rank's batches of the epoch (the same plan on every rank, then shared out)."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch])
        if self.attention:
            plan = file_batches(self.fit.windows, cfg.batch_size, rng, cfg.bucket, cfg.bucket_chunk)
        else:
            plan = length_batches(self.fit.windows.lengths, cfg.batch_size, rng, cfg.bucket, cfg.bucket_chunk)
        return EpochBatches(rank_share(plan, self.ctx), self._batch)

    def _batch(self, positions: np.ndarray) -> Batch:
        device = self.ctx.device
        inputs, order = self.encoder.encode(self.fit, positions, device)
        windows = self.fit.windows
        if self.attention:
            files, segments = np.unique(windows.file_index[order], return_inverse=True)
            targets, unit_weights = self.labels[files], self.file_class_weight[self.labels[files]]
            seg = torch.as_tensor(segments, dtype=torch.int64, device=device)
        else:
            targets, unit_weights, seg = self.window_labels[order], self.weights[order], None
        return Batch(
            inputs,
            torch.as_tensor(targets, dtype=torch.float32, device=device),
            torch.as_tensor(unit_weights, dtype=torch.float32, device=device),
            seg,
            int(windows.lengths[order].sum()),
        )

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits, scores = model(**batch.inputs)
        if batch.segments is not None:
            logits = attention_pool(logits, scores, batch.segments, len(batch.targets))
        elif scores is not None:
            # Window-level training of an attention model: keep the scorer in the graph, or DDP would
            # wait forever for its gradients.
            logits = logits + 0.0 * scores.sum()
        losses = F.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none")
        return (losses * batch.weights).sum() / batch.weights.sum().clamp(min=1e-12)

    def validate(self, net: nn.Module) -> dict:
        """Validation figures, identical on every rank: each scores its share, then all are gathered."""
        ctx, val = self.ctx, self.val
        share = np.arange(len(val))[ctx.rank :: ctx.world_size]
        logits, scores = window_outputs(
            net,
            self.encoder,
            val.subset(share),
            ctx.device,
            self.predict_batch_size,
            self.aggregation == "attention",
        )
        n = len(val)
        all_logits, all_scores = np.zeros(n), (np.zeros(n) if scores is not None else None)
        for positions, part_logits, part_scores in gather_objects((share, logits, scores), ctx):
            all_logits[positions] = part_logits
            if all_scores is not None:
                all_scores[positions] = part_scores
        file_index = val.windows.file_index
        if self.units == "file":
            files, proba = aggregate_windows(file_index, all_logits, all_scores, self.aggregation)
            return binary_metrics(self.labels[files], proba)
        return binary_metrics(self.labels[file_index], 1.0 / (1.0 + np.exp(-all_logits)))
