"""Weights-only loading of network weights: no file ever unpickles Python objects (which could run code).

Used for training checkpoints (`autoseg.training.checkpoint`), run folders and installed bundles alike.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from autoseg.errors import ConfigError


def load_weights_only(path: Path, map_location: str | torch.device = "cpu", kind: str = "weights file") -> Any:
    """torch.load with ``weights_only=True``: a pickled object is refused, an unreadable file is an error; both
    raise ConfigError naming the file (`kind`: "checkpoint" or "weights file", for the message)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise ConfigError(
            f"{path}: refused to load: the {kind} contains pickled Python objects{what} that could execute code "
            "when loaded; only files of tensors and plain values are accepted"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable {kind} ({type(exc).__name__}: {str(exc)[:200]})") from exc


def load_weights(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Model weights from a training checkpoint (its 'model' entry) or a plain weights file (a bundle's weights.pt),
    loaded the same way as every checkpoint: no code is ever unpickled."""
    path = Path(path)
    if path.name.startswith("checkpoint_"):
        if not path.is_file():
            raise ConfigError(f"{path}: checkpoint not found")
        data = load_weights_only(path, map_location, "checkpoint")
        if not isinstance(data, dict) or "model" not in data:
            raise ConfigError(f"{path}: not an autoseg checkpoint (no 'model' entry)")
        return data["model"]
    state = load_weights_only(path, map_location, "weights file")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a state dict of tensors")
    return state
