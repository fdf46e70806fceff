"""The training loop: plain PyTorch, no framework.

One loop serves both models.  The estimator hands it a function that yields this epoch's batches and a
function that scores the validation split; the loop owns the optimiser, early stopping, the progress
bar, the epoch log and, under `torchrun`, DistributedDataParallel.

Distributed training: `torchrun --nproc_per_node N runtrace train ...` sets RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR / MASTER_PORT; `distributed_context()` sees them and joins the process group
(gloo on CPU, nccl on CUDA).  Every rank builds the same batch list from the same seed and takes every
N-th batch, so the ranks see disjoint data and the same number of steps (DDP all-reduces gradients at
each step and would hang on unequal counts).  Validation is computed on all ranks and gathered, so every
rank takes the same early-stopping decision and ends with the same weights.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from runtrace.models.hyperparameters import TrainConfig

# --- data splits ------------------------------------------------------------------------------------


def split_validation(
    labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into labels) for fitting and for validation.

    Whole groups go to one side (pass one group per file for a split by file), stratified by the
    group's label so both classes are validated; a class with a single group stays in training.
    """
    labels = np.asarray(labels)
    positions = np.arange(len(labels))
    if fraction <= 0 or len(labels) < 4:
        return positions, positions[:0]
    rng = np.random.default_rng(seed)
    unique_groups, group_of = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    group_label = np.zeros(len(unique_groups), dtype=np.int64)
    np.maximum.at(group_label, group_of, labels.astype(np.int64))
    val_groups = []
    for cls in np.unique(group_label):
        members = rng.permutation(np.flatnonzero(group_label == cls))
        take = int(round(fraction * len(members)))
        if len(members) >= 2:
            val_groups.extend(members[: max(take, 1)].tolist())
    is_val = np.isin(group_of, val_groups)
    return positions[~is_val], positions[is_val]


# --- metrics ----------------------------------------------------------------------------------------


def binary_metrics(labels: np.ndarray, proba: np.ndarray) -> dict:
    labels = np.asarray(labels).astype(np.float64)
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-7, 1 - 1e-7)
    loss = float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean()) if len(p) else float("nan")
    predicted = p >= 0.5
    negatives = labels == 0
    return {
        "loss": loss,
        "accuracy": float((predicted == labels.astype(bool)).mean()) if len(p) else float("nan"),
        "auc": float(roc_auc_score(labels, p)) if 0 < labels.sum() < len(labels) else float("nan"),
        "fpr": float(predicted[negatives].mean()) if negatives.any() else float("nan"),
    }


# --- distribution -----------------------------------------------------------------------------------


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda", local_rank)
    return torch.device(preference)


def distributed_context(device: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistContext(0, 1, dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), dev)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_share(items: list, ctx: DistContext) -> list:
    """This rank's equal share of items (every rank gets the same count; a few may be dropped)."""
    if not ctx.distributed:
        return items
    if len(items) < ctx.world_size:  # too few to share: every rank needs at least one step
        items = items * math.ceil(ctx.world_size / max(len(items), 1))
    per_rank = len(items) // ctx.world_size
    return items[ctx.rank :: ctx.world_size][:per_rank]


def gather_objects(obj, ctx: DistContext) -> list:
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


# --- the loop ---------------------------------------------------------------------------------------


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]  # keyword arguments of the network
    targets: torch.Tensor  # float, one per unit (a window, or a file when `segments` is set)
    weights: torch.Tensor  # float, one per unit
    segments: torch.Tensor | None = None  # window -> unit in this batch, for attention aggregation
    n_tokens: int = 0


class TrainingTask(Protocol):
    """What `fit_loop` trains on (models.window_training.WindowTraining is the one in use)."""

    validates: bool  # whether validate() has files to score

    def batches(self, epoch: int) -> Iterable[Batch]: ...  # sized too: len() is the progress total

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor: ...

    def validate(self, net: nn.Module) -> dict: ...


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    bar = Progress(*columns, disable=not enabled)
    if enabled and bar.console._live_stack:  # noqa: SLF001 - a caller's live display is showing already
        bar = Progress(*columns, disable=True)  # rich allows one live display at a time
    return bar


@contextmanager
def _deterministic_kernels():
    """PyTorch's deterministic kernels while training. With two CPU threads the default ones gave
    results that varied from run to run (the demo's LSTM scores moved by up to 0.3 after six epochs); with
    these a seed gives the same weights every time, measured no slower on the demo. warn_only: on a GPU,
    kernels that have no deterministic version warn instead of failing. The setting is the process's, so
    it is put back afterwards."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def fit_loop(net: nn.Module, task: TrainingTask, config: TrainConfig, ctx: DistContext) -> list[dict]:
    """Train `net` in place; returns one dict per epoch.  Keeps the weights of the best validation
    epoch (or the last epoch without validation).

    task.batches(epoch): this rank's batches of that epoch (sized: built lazily, counted for the
    progress bar).  task.validate(net): metrics on the validation split, identical on every rank; its
    "loss" decides early stopping.
    """
    with _deterministic_kernels():
        return _fit_loop(net, task, config, ctx)


def _fit_loop(net: nn.Module, task: TrainingTask, config: TrainConfig, ctx: DistContext) -> list[dict]:
    validate = task.validate if task.validates else None
    model = net
    if ctx.distributed:
        model = DistributedDataParallel(net, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    log = Path(config.log_path) if (config.log_path and ctx.is_main) else None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
    history: list[dict] = []
    best_loss, best_state, stale = float("inf"), None, 0

    with _progress(config.progress and ctx.is_main) as bar:
        bar_task = bar.add_task("train", total=None, status="")
        for epoch in range(1, config.epochs + 1):
            model.train()
            started = time.perf_counter()
            total_loss, total_weight, tokens, steps = 0.0, 0.0, 0, 0
            epoch_batches = task.batches(epoch)
            bar.update(
                bar_task, description=f"epoch {epoch}/{config.epochs}", total=len(epoch_batches), completed=0
            )
            for batch in epoch_batches:
                optimiser.zero_grad(set_to_none=True)
                loss = task.loss(model, batch)
                loss.backward()
                if config.grad_clip:
                    nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                optimiser.step()
                weight = float(batch.weights.sum())
                total_loss += float(loss.detach()) * weight
                total_weight += weight
                tokens += batch.n_tokens
                steps += 1
                bar.update(bar_task, advance=1, status=f"loss {total_loss / max(total_weight, 1e-12):.4f}")
            elapsed = time.perf_counter() - started
            if ctx.distributed:  # the epoch's figures over all ranks, not rank 0's share
                totals = [total_loss, total_weight, float(tokens)]
                totals = torch.tensor(totals, dtype=torch.float64, device=ctx.device)  # nccl: on the GPU
                dist.all_reduce(totals)
                total_loss, total_weight, tokens = float(totals[0]), float(totals[1]), int(totals[2])
            record = {
                "epoch": epoch,
                "train_loss": total_loss / max(total_weight, 1e-12),
                "steps": steps,
                "tokens": tokens,
                "seconds": round(elapsed, 3),
                "tokens_per_s": round(tokens / max(elapsed, 1e-9), 1),
            }
            if validate is not None:
                model.eval()
                metrics = validate(net)
                record.update({f"val_{k}": v for k, v in metrics.items()})
                if metrics["loss"] < best_loss - 1e-6:
                    best_loss, stale = metrics["loss"], 0
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                else:
                    stale += 1
                record["best"] = stale == 0
            history.append(record)
            status = f"loss {record['train_loss']:.4f}"
            if validate is not None:
                status += f"  val_loss {record['val_loss']:.4f}  val_auc {record['val_auc']:.3f}"
                status += f"  val_acc {record['val_accuracy']:.3f}"
            bar.update(bar_task, status=status)
            if config.progress and ctx.is_main and not bar.disable:  # one line per epoch stays on screen
                bar.console.print(f"epoch {epoch}: {status}  ({record['tokens_per_s']:,.0f} tokens/s)")
            if log is not None:
                with log.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
            if validate is not None and stale >= config.patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return history
