"""The batch-transform protocol and the small helpers the transforms share.

A `BatchTransform` works in two steps:

* `draw(gen, batch_size, channels)` draws every random parameter of one batch (which samples, and where nnU-Net does so
  which channels, are hit, and the values) as small CPU tensors from an explicit CPU `torch.Generator`;
* `apply(data, seg, params)` applies them, batched, on the device `data` lives on. It is deterministic, so a batch
  depends only on the generator's seed and the input tensors, on every device.

`data` is (B, C, *S) float32 and `seg` (B, Cs, *S) a signed integer label map (-1 outside the image). `apply` may work
in place on both (the pipeline hands it tensors it owns, contiguous) and returns the (possibly new) pair.

Parameters are drawn in float64 (exact enough to reproduce batchgenerators' draws when fed the same values) and
converted to float32 on their way to the device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import torch
from torch import Tensor

from autoseg.errors import ConfigError

P = TypeVar("P")


class BatchTransform(ABC, Generic[P]):
    """One augmentation step: random parameters drawn on the CPU, applied batched on any device."""

    @abstractmethod
    def draw(self, gen: torch.Generator, batch_size: int, channels: int) -> P:
        """This transform's random parameters for a batch of `batch_size` samples with `channels` image channels."""

    @abstractmethod
    def apply(self, data: Tensor, seg: Tensor, params: P) -> tuple[Tensor, Tensor]:
        """data (B, C, *S) float32, seg (B, Cs, *S) int -> the transformed pair (shapes may change, e.g. a crop)."""


# ---------------------------------------------------------------------------------------------------------- checks


def check_probability(name: str, p: float) -> float:
    """`p` as a float in [0, 1], else ConfigError naming the setting."""
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"augmentation setting {name} must be a probability in [0, 1], got {p}")
    return p


def check_range(name: str, value: Sequence[float], minimum: float | None = None) -> tuple[float, float]:
    """`value` as a (low, high) pair of floats with low <= high (and low >= minimum), else ConfigError."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"augmentation setting {name} must be a (low, high) pair of numbers, got {value!r}") from exc
    if low > high:
        raise ConfigError(f"augmentation setting {name} must have low <= high, got ({low}, {high})")
    if minimum is not None and low < minimum:
        raise ConfigError(f"augmentation setting {name} must be >= {minimum}, got ({low}, {high})")
    return low, high


def check_ndim(ndim: int) -> int:
    """Number of spatial axes: 2 or 3, else ConfigError."""
    if int(ndim) not in (2, 3):
        raise ConfigError(f"batch augmentation needs 2 or 3 spatial axes, got {ndim}")
    return int(ndim)


def check_input(data: Tensor, seg: Tensor, ndim: int, what: str) -> None:
    """ValueError unless data (B, C, *S) and seg (B, Cs, *S) have `ndim` spatial axes and the same B and S."""
    if data.ndim != ndim + 2 or seg.ndim != ndim + 2:
        raise ValueError(
            f"{what} expects data and seg of shape (B, C, {ndim} spatial axes), got {tuple(data.shape)} and "
            f"{tuple(seg.shape)}"
        )
    if data.shape[0] != seg.shape[0] or data.shape[2:] != seg.shape[2:]:
        raise ValueError(f"{what}: data {tuple(data.shape)} and seg {tuple(seg.shape)} differ in batch or space")


# ----------------------------------------------------------------------------------------------------------- draws


def rand(gen: torch.Generator, *shape: int) -> Tensor:
    """U[0, 1) float64 CPU tensor of `shape` from `gen`."""
    return torch.rand(shape, generator=gen, dtype=torch.float64)


def hits(gen: torch.Generator, p: float, *shape: int) -> Tensor:
    """Bool CPU tensor of `shape`: each entry True with probability `p` (batchgenerators' `uniform() < p`)."""
    return rand(gen, *shape) < p


def uniform(gen: torch.Generator, low: float, high: float, *shape: int) -> Tensor:
    """U[low, high) float64 CPU tensor of `shape`."""
    return low + (high - low) * rand(gen, *shape)


def split_uniform(gen: torch.Generator, low: float, high: float, *shape: int) -> Tensor:
    """batchgenerators' factor draw for a range around 1: with probability 0.5 U(low, 1), otherwise U(1, high), so
    that half of the factors shrink and half grow whatever the range's asymmetry. A range that does not contain 1
    is drawn uniformly (batchgenerators would then return values outside the range half of the time)."""
    if not low < 1.0 < high:
        return uniform(gen, low, high, *shape)
    below = rand(gen, *shape) < 0.5
    small = uniform(gen, low, 1.0, *shape)
    large = uniform(gen, 1.0, high, *shape)
    return torch.where(below, small, large)


# ------------------------------------------------------------------------------------------------ batched updates


def rows_of(mask: Tensor) -> Tensor:
    """Flat indices b * C + c (int64, CPU) of the True entries of a (B, C) mask, in order."""
    return torch.nonzero(mask.reshape(-1), as_tuple=False).reshape(-1)


def per_row(values: Tensor, rows: Tensor, device: torch.device, ndim: int) -> Tensor:
    """values (B, C) -> float32 (n, 1, ..., 1) on `device` for the flat `rows` (broadcasts over n rows of ndim axes)."""
    picked = values.reshape(-1)[rows].to(torch.float32)
    return picked.reshape(-1, *([1] * ndim)).to(device)


def map_rows(data: Tensor, rows: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Replace the sample-channel images `rows` (flat indices into B * C) of data (B, C, *S) by `fn(stack)`.

    `fn` receives the (n, *S) stack of those images and returns the same shape; data is updated in place (made
    contiguous first) and returned. Nothing happens without rows.
    """
    if rows.numel() == 0:
        return data
    data = data.contiguous()
    flat = data.view(-1, *data.shape[2:])
    index = rows.to(data.device)
    flat.index_copy_(0, index, fn(flat.index_select(0, index)).to(flat.dtype))
    return data


def sample_rows(samples: Tensor, channels: int) -> Tensor:
    """Flat row indices of every channel of the hit samples (B,) bool."""
    return rows_of(samples[:, None].expand(-1, channels))


def centre_crop(x: Tensor, size: Sequence[int]) -> Tensor:
    """View of the centre `size` of the last len(size) axes of x; the start is (shape - size) // 2 per axis."""
    k = len(size)
    if any(s < p for s, p in zip(x.shape[-k:], size)):
        raise ValueError(f"cannot crop {tuple(size)} from a tensor of spatial shape {tuple(x.shape[-k:])}")
    index = [slice(None)] * (x.ndim - k)
    index += [slice((s - p) // 2, (s - p) // 2 + p) for s, p in zip(x.shape[-k:], size)]
    return x[tuple(index)]
