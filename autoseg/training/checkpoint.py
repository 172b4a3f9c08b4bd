"""Checkpoints that hold only tensors and plain Python values, loaded with ``torch.load(weights_only=True)``.

Content: model and optimizer state, grad-scaler state, next epoch, RNG states (torch, CUDA, numpy, Python
``random``; all as tensors/lists/ints), best EMA pseudo-Dice, the logged curves, versions, the train config as a
dict and the plans name. Files are serialised to memory, then written atomically, so a kill during a save leaves
the previous checkpoint intact. A file that needs unpickling of arbitrary objects is refused, never executed.
"""

from __future__ import annotations

import io
import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoseg import __version__
from autoseg.errors import ConfigError
from autoseg.networks.weights import load_weights_only
from autoseg.serialization import atomic_write_bytes

FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    return {
        "autoseg": __version__,
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def capture_rng() -> dict[str, Any]:
    """All RNG states as tensors and plain lists (weights_only-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": int(py_version), "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Serialise `payload` (tensors and plain values only) and write it atomically."""
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, "versions": versions(), **payload}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``; pickled objects, truncated files and foreign formats raise ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found")
    data = load_weights_only(path, map_location, "checkpoint")
    if not isinstance(data, dict) or "model" not in data:
        raise ConfigError(f"{path}: not an autoseg checkpoint (no 'model' entry)")
    return data
