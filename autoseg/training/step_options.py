"""The training step's speed switches, from `TrainConfig`: autocast dtype, channels-last, cuDNN autotuning and
`torch.compile`.

* `amp` (true) + `amp_dtype` ("auto"): autocast; "auto" = float16 on CUDA (nnU-Net's) and none elsewhere;
  "float16" or "bfloat16" autocast on every device, the CPU included (float16 with a gradient scaler);
* `channels_last` (false): weights and batches in channels-last memory format (`channels_last_3d` for 3D);
* `cudnn_benchmark` (true): cuDNN autotuning on CUDA (nnU-Net's default); off with `--deterministic`;
* `compile` (""): a `torch.compile` backend for the training step ("inductor" is torch's own; "" = off).

nnU-Net's defaults (float16 autocast and cuDNN autotuning on CUDA) stay on; channels-last, bfloat16 and compilation
are off everywhere until a GPU measurement shows they help (`benchmarks/gpu_check.sh` times each). On CPU nothing
changes unless asked for.
"""

from __future__ import annotations

import torch

from autoseg.errors import ConfigError

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def autocast_dtype(amp: bool, amp_dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the training step on `device`, or None for full precision."""
    if not amp:
        return None
    if amp_dtype == "auto":
        return torch.float16 if device.type == "cuda" else None
    try:
        return AMP_DTYPES[amp_dtype]
    except KeyError as exc:
        raise ConfigError(f"train config: amp_dtype must be auto, float16 or bfloat16, got {amp_dtype!r}") from exc


def grad_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for float16 autocast only (bfloat16 has float32's range)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def memory_format(channels_last: bool, spatial_dims: int) -> torch.memory_format:
    """The memory format of weights and batches: channels-last (2D or 3D) or the default contiguous one."""
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def set_cudnn_benchmark(enabled: bool, device: torch.device, deterministic: bool) -> None:
    """cuDNN autotuning for a CUDA run (never with `deterministic`); nothing to set elsewhere."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(enabled) and not deterministic


def compiled(model: torch.nn.Module, backend: str) -> torch.nn.Module:
    """`model` compiled with `torch.compile` (the same parameters; state dicts keep their keys on `model`), or `model`
    itself for backend ""."""
    if not backend:
        return model
    known = set(torch._dynamo.list_backends(exclude_tags=())) | {"inductor"}
    if backend not in known:
        choices = ", ".join(sorted(known))
        raise ConfigError(f"train config: compile backend {backend!r} is unknown; available: {choices}")
    return torch.compile(model, backend=backend)
