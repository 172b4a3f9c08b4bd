"""Simulated low resolution: nearest-neighbour downsampling by a random zoom, then linear upsampling back.

batchgenerators resizes each image with skimage (`resize(order=0)` down to round(shape * zoom), `resize(order=1)` up,
mode 'edge', no anti-aliasing; both use the half-voxel grid). Both steps are separable, so per axis of length n with
target t the composite is exactly

    out[i] = (1 - w_i) x[m(j0_i)] + w_i x[m(j1_i)],   u_i = clip((i + 0.5) t / n - 0.5, 0, t - 1),
    j0 = floor(u), j1 = min(j0 + 1, t - 1), w = u - j0,   m(j) = min(floor((j + 0.5) n / t), n - 1),

two gathers and a blend per axis with per-image indices (computed in float64 on the CPU, like skimage): no
intermediate image of a varying size, so all hit images of a batch go together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from autoseg.errors import ConfigError
from autoseg.training.batch_augment.base import (
    BatchTransform,
    check_ndim,
    check_probability,
    check_range,
    hits,
    map_rows,
    rows_of,
    uniform,
)


@dataclass(frozen=True)
class LowResParams:
    hit: Tensor  # (B,) bool
    channel_hit: Tensor  # (B, C) bool
    zoom: Tensor  # (B, C) float64, the same for all (not ignored) axes


class SimulateLowResolution(BatchTransform[LowResParams]):
    """Each hit sample (p), each of its channels with p_per_channel, zoom U(zoom_range) per channel; axes in
    `ignore_axes` (e.g. (0,) for dummy 2D) keep their resolution."""

    def __init__(
        self,
        ndim: int,
        p: float = 0.25,
        p_per_channel: float = 0.5,
        zoom_range: Sequence[float] = (0.5, 1.0),
        ignore_axes: Sequence[int] = (),
    ):
        self.ndim = check_ndim(ndim)
        self.p = check_probability("p_low_resolution", p)
        self.p_per_channel = check_probability("low resolution p_per_channel", p_per_channel)
        self.zoom_range = check_range("low resolution zoom_range", zoom_range, minimum=1e-6)
        self.ignore_axes = tuple(int(a) for a in ignore_axes)
        if any(not 0 <= a < self.ndim for a in self.ignore_axes):
            raise ConfigError(f"low resolution ignore_axes must be spatial axes below {self.ndim}, got {ignore_axes}")

    def draw(self, gen: torch.Generator, batch_size: int, channels: int) -> LowResParams:
        hit = hits(gen, self.p, batch_size)
        channel_hit = hits(gen, self.p_per_channel, batch_size, channels)
        return LowResParams(hit, channel_hit, uniform(gen, *self.zoom_range, batch_size, channels))

    def apply(self, data: Tensor, seg: Tensor, params: LowResParams) -> tuple[Tensor, Tensor]:
        """data (B, C, *S): the hit images degraded, same shape."""
        rows = rows_of(params.hit[:, None] & params.channel_hit)
        zoom = params.zoom.reshape(-1)[rows]

        def degrade(stack: Tensor) -> Tensor:
            for axis, length in enumerate(stack.shape[1:]):
                if axis in self.ignore_axes:
                    continue
                low, high, weight = resample_indices(length, zoom)
                stack = _blend_axis(stack, axis + 1, low, high, weight)
            return stack

        return map_rows(data, rows, degrade), seg


def resample_indices(length: int, zoom: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per image (zoom (n,)): source indices (n, length) int64 of the two neighbours and the weight (n, length) of
    the second, for nearest-down to round(length * zoom) (at least 1) then linear-up to `length` (see the module)."""
    target = torch.clamp(torch.round(length * zoom), min=1).to(torch.float64)[:, None]  # (n, 1), ties to even
    out = torch.arange(length, dtype=torch.float64)[None, :]
    u = torch.minimum(torch.clamp((out + 0.5) * (target / length) - 0.5, min=0.0), target - 1)
    j0 = torch.floor(u)
    j1 = torch.minimum(j0 + 1, target - 1)
    weight = u - j0

    ratio = torch.full_like(target, float(length)) / target  # not `length / target`: torch computes 1 / t * length

    def source(j: Tensor) -> Tensor:
        return torch.clamp(torch.floor((j + 0.5) * ratio), max=length - 1).to(torch.int64)

    return source(j0), source(j1), weight


def _blend_axis(stack: Tensor, dim: int, low: Tensor, high: Tensor, weight: Tensor) -> Tensor:
    """(1 - w) stack[low] + w stack[high] along `dim` of stack (n, *S), with per-image indices (n, S[dim - 1])."""
    shape = [stack.shape[0]] + [1] * (stack.ndim - 1)
    shape[dim] = stack.shape[dim]
    device = stack.device
    low, high = low.reshape(shape).to(device), high.reshape(shape).to(device)
    weight = weight.to(torch.float32).reshape(shape).to(device)
    first = torch.take_along_dim(stack, low, dim)
    second = torch.take_along_dim(stack, high, dim)
    return first + weight * (second - first)
