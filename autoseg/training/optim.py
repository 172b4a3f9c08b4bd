"""Optimizers (by name) and the poly learning-rate schedule, stepped once per epoch at the epoch's start.

The schedule is a pure function of (epoch, total epochs), so extending a finished run with a larger ``epochs``
simply recomputes it with the new total: the learning rate jumps up to the value the longer schedule has at that
epoch and decays to zero at the new end.
"""

from __future__ import annotations

import torch

from autoseg.registry import Registry
from autoseg.training.config import TrainConfig

optimizers: Registry = Registry("optimizer")


@optimizers.register("sgd")
def _sgd(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)


@optimizers.register("adamw")
def _adamw(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The registered optimizer `cfg.optimizer`, given `cfg.optimizer_kwargs` (checked against its signature)."""
    return optimizers.create(cfg.optimizer, model.parameters(), cfg, kwargs=cfg.optimizer_kwargs)


def poly_lr(base_lr: float, epoch: int, epochs: int, exponent: float = 0.9) -> float:
    """lr = base * (1 - epoch / epochs) ** exponent (0 at and after the last epoch)."""
    return base_lr * max(0.0, 1.0 - epoch / epochs) ** exponent


def scheduled_lr(base_lr: float, epoch: int, epochs: int, exponent: float = 0.9, warmup_epochs: int = 0) -> float:
    """Linear warm-up, lr = base * (epoch + 1) / (warmup_epochs + 1) for the first `warmup_epochs` epochs, then
    the poly schedule over the remaining epochs (base at the first of them, 0 at the end)."""
    if epoch < warmup_epochs:
        return base_lr * (epoch + 1) / (warmup_epochs + 1)
    return poly_lr(base_lr, epoch - warmup_epochs, epochs - warmup_epochs, exponent)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
