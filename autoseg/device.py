"""The torch device of a run: one resolver for train, predict, demo and benchmark."""

from __future__ import annotations

import torch

from autoseg.errors import ConfigError


def resolve_device(name: str | None) -> torch.device:
    """'cuda' | 'cpu' | 'cuda:1' | None (CUDA when available)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu, "
            "or leave --device out to use CUDA only when it is available"
        )
    if not (name == "cpu" or name.startswith("cuda")):
        raise ConfigError(f"--device {name!r}: use cpu or cuda")
    return torch.device(name)
