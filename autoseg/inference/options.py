"""The `predict` options shared by autoseg's own models and nnU-Net model folders: checks and the engine choice."""

from __future__ import annotations

import torch

from autoseg.device import resolve_device
from autoseg.errors import ConfigError
from autoseg.inference.backends.choice import resolve_backend
from autoseg.inference.backends.precision import resolve_precision


def check_predict_options(workers: int | None, step: float | None) -> None:
    """A ConfigError naming the option when `workers` or `step` is out of range."""
    if workers is not None and workers < 1:
        raise ConfigError(f"-j/--workers {workers}: must be at least 1 (1 = export in the main process)")
    if step is not None and not 0 < step <= 1:
        raise ConfigError(f"--step {step}: must be in (0, 1]; 0.5 is the default, larger is faster")


def resolve_engine(device: str | None, backend: str, precision: str) -> tuple[torch.device, str, str]:
    """(device, backend, precision) resolved: what runs the network forward and in which arithmetic."""
    dev = resolve_device(device)
    backend = resolve_backend(backend, dev)
    return dev, backend, resolve_precision(precision, dev, backend)
