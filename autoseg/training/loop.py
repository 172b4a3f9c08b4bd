"""One training epoch and one validation epoch: steps, mixed precision, gradient clipping, pseudo-Dice.

Pseudo-Dice (nnU-Net's per-epoch signal): TP/FP/FN of the argmax of the highest-resolution output (regions: of each
sigmoid output above 0.5, i.e. logit > 0), summed over all validation patches of the epoch (and over ranks under DDP),
background excluded, voxels of the ignore label left out; Dice = 2TP / (2TP + FP + FN).
Time spent in ``next(loader)`` is counted as waiting for data.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from autoseg.training.distributed import DistInfo, all_reduce_sum
from autoseg.training.losses import region_masks


@dataclass
class StepContext:
    model: torch.nn.Module
    loss_fn: torch.nn.Module  # takes (output, targets) exactly as the model returns / the loader yields them
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: bool  # autocast (in `amp_dtype`)
    grad_clip: float
    num_classes: int
    dist: DistInfo
    regions: tuple[tuple[int, ...], ...] = ()  # a dataset with regions: one sigmoid output each
    ignore_label: int | None = None
    amp_dtype: torch.dtype = torch.float16  # autocast dtype when `amp`
    memory_format: torch.memory_format = torch.contiguous_format  # of the batches (channels-last with the weights)


@dataclass(frozen=True)
class EpochStats:
    loss: float
    data_seconds: float
    tp: np.ndarray | None = None  # per foreground label (validation only)
    fp: np.ndarray | None = None
    fn: np.ndarray | None = None

    @property
    def dice(self) -> tuple[float, ...]:
        if self.tp is None:
            return ()
        denom = 2 * self.tp + self.fp + self.fn
        return tuple(float(2 * t / d) if d > 0 else float("nan") for t, d in zip(self.tp, denom))


def _next_batch(it: Iterator, device: torch.device, memory_format=torch.contiguous_format):
    """-> (data, targets, seconds waited)."""
    start = time.perf_counter()
    batch = next(it)
    waited = time.perf_counter() - start
    data = batch.data.to(device, non_blocking=True, memory_format=memory_format)
    targets = [t.to(device, non_blocking=True) for t in batch.target]
    return data, targets, waited


def compute_loss(ctx: StepContext, output, targets: list[torch.Tensor]) -> torch.Tensor:
    if isinstance(output, (list, tuple)):
        return ctx.loss_fn(list(output), targets)
    return ctx.loss_fn(output, targets[0])


def train_step(ctx: StepContext, data: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
    """One optimizer step; -> the loss as a detached 0-d tensor on the device (no host synchronisation here: the
    epoch reads all its losses at once)."""
    ctx.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(ctx.device.type, dtype=ctx.amp_dtype, enabled=ctx.amp):
        output = ctx.model(data)
        loss = compute_loss(ctx, output, targets)
    ctx.scaler.scale(loss).backward()
    ctx.scaler.unscale_(ctx.optimizer)
    if ctx.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.grad_clip)
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    return loss.detach()


def confusion(
    output, target: torch.Tensor, num_classes: int, regions: tuple = (), ignore_label: int | None = None
) -> torch.Tensor:
    """(3, K) tensor of TP, FP, FN per foreground label (K = num_classes - 1) or per region (K = len(regions));
    voxels whose target is `ignore_label` are not counted."""
    logits = output[0] if isinstance(output, (list, tuple)) else output
    ref = target[:, 0]
    valid = ref != ignore_label if ignore_label is not None else None  # None: every voxel counts
    if regions:
        masks = region_masks(target, regions)
        pairs = [(logits[:, i] > 0, masks[:, i]) for i in range(len(regions))]
    else:
        pred = logits.argmax(1)
        pairs = [(pred == lab, ref == lab) for lab in range(1, num_classes)]
    rows = []
    for p, r in pairs:
        if valid is not None:
            p, r = p & valid, r & valid
        rows.append(torch.stack([(p & r).sum(), (p & ~r).sum(), (~p & r).sum()]))
    return torch.stack(rows, 1).double() if rows else torch.zeros(3, 0, dtype=torch.float64)


def train_epoch(ctx: StepContext, it: Iterator, n_iter: int) -> EpochStats:
    ctx.model.train()
    losses, waited = [], 0.0
    for _ in range(n_iter):
        data, targets, w = _next_batch(it, ctx.device, ctx.memory_format)
        waited += w
        losses.append(train_step(ctx, data, targets))
    mean = float(np.mean(torch.stack(losses).float().cpu().numpy().astype(np.float64)))
    loss = all_reduce_sum(torch.tensor([mean], dtype=torch.float64), ctx.dist) / ctx.dist.world_size
    return EpochStats(float(loss), waited)


@torch.no_grad()
def val_epoch(ctx: StepContext, it: Iterator, n_iter: int) -> EpochStats:
    ctx.model.eval()
    losses, waited = [], 0.0
    counts = torch.zeros(3, len(ctx.regions) or ctx.num_classes - 1, dtype=torch.float64)
    for _ in range(n_iter):
        data, targets, w = _next_batch(it, ctx.device, ctx.memory_format)
        waited += w
        with torch.autocast(ctx.device.type, dtype=ctx.amp_dtype, enabled=ctx.amp):
            output = ctx.model(data)
            losses.append(float(compute_loss(ctx, output, targets)))
        counts += confusion(output, targets[0], ctx.num_classes, ctx.regions, ctx.ignore_label).cpu()
    loss = torch.tensor([float(np.mean(losses)) if losses else float("nan")], dtype=torch.float64)
    loss = all_reduce_sum(loss, ctx.dist) / ctx.dist.world_size
    counts = all_reduce_sum(counts, ctx.dist).numpy()
    return EpochStats(float(loss), waited, counts[0], counts[1], counts[2])
