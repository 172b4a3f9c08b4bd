"""Safe reading of nnU-Net v2 checkpoints (``fold_k/checkpoint_final.pth``): no pickled code is ever executed.

nnU-Net itself opens its checkpoints with ``torch.load(weights_only=False)``, so a downloaded model file can run any
code it carries. Here the file is read with torch's weights-only unpickler, which builds only tensors, containers and
plain values; the one addition allowed explicitly is what nnU-Net's training log puts into every checkpoint: numpy
scalars (``np.float64`` Dice values) and their dtypes (`NUMPY_SCALAR_GLOBALS`). Anything else, a class or a function
(how a malicious pickle runs code), is refused with a ConfigError naming the file and every offending type.

What is used of a checkpoint: ``network_weights`` (the state dict, names as dynamic_network_architectures gives
them), ``inference_allowed_mirroring_axes`` (the TTA mirror axes), ``trainer_name`` and ``init_args.configuration``
(for messages and checks).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoseg.errors import ConfigError
from autoseg.networks.nnunet import map_state_dict

_SCALAR = (getattr(np, "_core", None) or np.core).multiarray.scalar  # what numpy scalars pickle with (numpy 2 / 1.x)
# (object, the name a pickle refers to it by): numpy 2 writes numpy._core..., numpy 1.x wrote numpy.core...
NUMPY_SCALAR_GLOBALS: tuple = (
    (_SCALAR, "numpy._core.multiarray.scalar"),
    (_SCALAR, "numpy.core.multiarray.scalar"),
    np.dtype,
    *(
        getattr(np.dtypes, name)
        for name in ("BoolDType", "Int8DType", "Int16DType", "Int32DType", "Int64DType", "UInt8DType",
                     "UInt16DType", "UInt32DType", "UInt64DType", "Float16DType", "Float32DType", "Float64DType")
    ),
)  # fmt: skip
ALLOWED_NAMES = frozenset(
    g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in NUMPY_SCALAR_GLOBALS
)


@dataclass(frozen=True)
class NnunetCheckpoint:
    path: Path
    network_weights: dict[str, torch.Tensor]  # names as dynamic_network_architectures gives them
    mirror_axes: tuple[int, ...] | None  # inference_allowed_mirroring_axes; None: no mirroring allowed
    trainer_name: str
    configuration: str | None  # init_args.configuration, when recorded


def _unsafe_globals(path: Path) -> list[str]:
    """The classes/functions a pickle in `path` refers to beyond what weights-only loading and we allow (the file
    is only scanned, nothing is built)."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - only used to name the offending types in the message
        return []
    return [g for g in found if g not in ALLOWED_NAMES]


def load_safely(path: Path, mmap: bool = False) -> Any:
    """torch.load(weights_only=True) with numpy scalars allowed; ConfigError naming the file and the offending
    types for anything else, or for a file that is no torch checkpoint."""
    try:
        with torch.serialization.safe_globals(list(NUMPY_SCALAR_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        offending = _unsafe_globals(path)
        if not offending:
            raise ConfigError(f"{path}: not a readable nnU-Net checkpoint ({str(exc)[:200]})") from exc
        raise ConfigError(
            f"{path}: refused to load: the checkpoint pickles Python objects that could execute code when loaded: "
            f"{', '.join(offending)}; only tensors, plain values and numpy scalars are accepted (nnU-Net's own "
            "checkpoints contain nothing else)"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ConfigError(
            f"{path}: not a readable nnU-Net checkpoint ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc


def _mirror_axes(value: Any, path: Path) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, Sequence) and all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in value):
        return tuple(int(a) for a in value)
    raise ConfigError(f"{path}: inference_allowed_mirroring_axes must be a list of axes or null, got {value!r}")


def read_checkpoint(path: str | Path, mmap: bool = False) -> NnunetCheckpoint:
    """An nnU-Net checkpoint's network weights and inference settings (`mmap`: tensors stay on disk until used,
    for a cheap look at the settings)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found")
    data = load_safely(path, mmap)
    if not isinstance(data, Mapping) or not isinstance(data.get("network_weights"), Mapping):
        raise ConfigError(f"{path}: not an nnU-Net checkpoint (no 'network_weights' entry)")
    weights = dict(data["network_weights"])
    bad = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConfigError(f"{path}: network_weights entry {bad[0]!r} is not a tensor")
    init = data.get("init_args") if isinstance(data.get("init_args"), Mapping) else {}
    configuration = init.get("configuration")
    return NnunetCheckpoint(
        path=path,
        network_weights=weights,
        mirror_axes=_mirror_axes(data.get("inference_allowed_mirroring_axes"), path),
        trainer_name=str(data.get("trainer_name", "")),
        configuration=str(configuration) if configuration is not None else None,
    )


def load_nnunet_weights(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The network weights of an nnU-Net checkpoint under autoseg's parameter names (`map_state_dict`)."""
    state = map_state_dict(read_checkpoint(path).network_weights)
    return {k: v.to(map_location) for k, v in state.items()} if str(map_location) != "cpu" else state


def check_mirror_axes(axes: tuple[int, ...] | None, ndim: int, path: Path) -> None:
    if axes is not None and any(a < 0 or a >= ndim for a in axes):
        raise ConfigError(f"{path}: inference_allowed_mirroring_axes {list(axes)} do not fit a {ndim}-D network")
