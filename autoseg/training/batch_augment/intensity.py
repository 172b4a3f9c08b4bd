"""Intensity transforms (images only, labels untouched): Gaussian noise, Gaussian blur, multiplicative brightness,
contrast and gamma, each with batchgenerators v1's draws (see the classes) and applied to the hit sample-channel images
as one (n, *S) stack.
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
    per_row,
    rows_of,
    sample_rows,
    split_uniform,
    uniform,
)

NOISE_SEED_HIGH = 2**62  # noise seeds are drawn in [0, NOISE_SEED_HIGH)


# ----------------------------------------------------------------------------------------------------------- noise


@dataclass(frozen=True)
class NoiseParams:
    """Hit samples, their noise standard deviation and the seed of the noise field of this batch."""

    hit: Tensor  # (B,) bool
    sigma: Tensor  # (B,) float64
    seed: int  # seeds a CPU generator that draws the (n_hit, C, *S) N(0, 1) field in `apply`


class GaussianNoise(BatchTransform[NoiseParams]):
    """Additive Gaussian noise, one standard deviation U(sigma_range) per hit sample for all its channels.

    batchgenerators calls the range `noise_variance` but uses the value as the standard deviation; so does this.
    The per-voxel field is drawn in `apply` from a CPU generator seeded with `params.seed` (drawn in `draw`), only for
    the hit samples, and moved to the device: the batch is the same on every device.
    """

    def __init__(self, p: float = 0.1, sigma_range: Sequence[float] = (0.0, 0.1)):
        self.p = check_probability("p_noise", p)
        self.sigma_range = check_range("noise sigma_range", sigma_range, minimum=0.0)

    def draw(self, gen: torch.Generator, batch_size: int, channels: int) -> NoiseParams:
        hit = hits(gen, self.p, batch_size)
        sigma = uniform(gen, *self.sigma_range, batch_size)
        seed = int(torch.randint(0, NOISE_SEED_HIGH, (1,), generator=gen))
        return NoiseParams(hit, sigma, seed)

    def apply(self, data: Tensor, seg: Tensor, params: NoiseParams) -> tuple[Tensor, Tensor]:
        """data (B, C, *S): data[b] += sigma[b] * N(0, 1) for the hit samples."""
        index = torch.nonzero(params.hit).reshape(-1)
        if index.numel() == 0:
            return data, seg
        field_gen = torch.Generator().manual_seed(params.seed)
        field = torch.randn((index.numel(), *data.shape[1:]), generator=field_gen, dtype=torch.float32)
        scale = params.sigma[index].to(torch.float32).reshape(-1, *([1] * (data.ndim - 1)))
        device_index = index.to(data.device)
        data = data.contiguous()
        noisy = data.index_select(0, device_index) + (field * scale).to(data.device)
        data.index_copy_(0, device_index, noisy)
        return data, seg


# ------------------------------------------------------------------------------------------------------------ blur


@dataclass(frozen=True)
class BlurParams:
    hit: Tensor  # (B,) bool: sample blurred
    channel_hit: Tensor  # (B, C) bool: channel blurred (if its sample is)
    sigma: Tensor  # (B, C, ndim) float64, per channel and axis


class GaussianBlur(BatchTransform[BlurParams]):
    """Gaussian blur as scipy's `gaussian_filter` (which batchgenerators calls): per axis a kernel of radius
    int(truncate * sigma + 0.5) normalised to sum 1, and 'reflect' borders (the edge voxel is repeated: d c b a | a b
    c d). Separable: per axis, the shifted copies of the symmetrically padded stack are summed with per-image weights.

    Hit: each sample with p, then each of its channels with p_per_channel; sigma U(sigma_range) per channel and axis.
    """

    def __init__(
        self,
        ndim: int,
        p: float = 0.2,
        p_per_channel: float = 0.5,
        sigma_range: Sequence[float] = (0.5, 1.0),
        truncate: float = 4.0,
    ):
        self.ndim = check_ndim(ndim)
        self.p = check_probability("p_blur", p)
        self.p_per_channel = check_probability("blur p_per_channel", p_per_channel)
        self.sigma_range = check_range("blur sigma_range", sigma_range, minimum=1e-6)
        if not float(truncate) > 0:
            raise ConfigError(
                f"augmentation setting blur truncate must be > 0 (kernel radius in sigmas), got {truncate}"
            )
        self.truncate = float(truncate)

    def draw(self, gen: torch.Generator, batch_size: int, channels: int) -> BlurParams:
        hit = hits(gen, self.p, batch_size)
        channel_hit = hits(gen, self.p_per_channel, batch_size, channels)
        sigma = uniform(gen, *self.sigma_range, batch_size, channels, self.ndim)
        return BlurParams(hit, channel_hit, sigma)

    def apply(self, data: Tensor, seg: Tensor, params: BlurParams) -> tuple[Tensor, Tensor]:
        """data (B, C, *S): the hit images blurred."""
        rows = rows_of(params.hit[:, None] & params.channel_hit)
        sigma = params.sigma.reshape(-1, self.ndim)[rows]

        def blur(stack: Tensor) -> Tensor:
            for axis in range(self.ndim):
                stack = _convolve_axis(stack, axis + 1, gaussian_kernels(sigma[:, axis], self.truncate))
            return stack

        return map_rows(data, rows, blur), seg


def gaussian_kernels(sigma: Tensor, truncate: float) -> Tensor:
    """float64 (n, 2R + 1) kernels for sigma (n,): exp(-t^2 / (2 sigma^2)) for |t| <= int(truncate * sigma + 0.5),
    0 beyond, each normalised to sum 1; R is the largest radius."""
    radius = torch.floor(truncate * sigma + 0.5).to(torch.int64)
    big = int(radius.max()) if radius.numel() else 0
    taps = torch.arange(-big, big + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * taps[None, :] ** 2 / sigma[:, None] ** 2)
    weights = weights * (taps[None, :].abs() <= radius[:, None])
    return weights / weights.sum(1, keepdim=True)


def symmetric_index(length: int, pad: int) -> Tensor:
    """Indices (length + 2 pad,) that pad an axis symmetrically (scipy 'reflect', numpy 'symmetric'), any pad."""
    positions = torch.arange(-pad, length + pad) % (2 * length)
    return torch.where(positions < length, positions, 2 * length - 1 - positions)


def _convolve_axis(stack: Tensor, dim: int, kernels: Tensor) -> Tensor:
    """Correlate each image of stack (n, *S) along `dim` with its own symmetric kernel (n, 2R + 1)."""
    n, length, pad = stack.shape[0], stack.shape[dim], (kernels.shape[1] - 1) // 2
    padded = stack.index_select(dim, symmetric_index(length, pad).to(stack.device))
    weights = kernels.to(torch.float32).to(stack.device).reshape(n, -1, *([1] * (stack.ndim - 1)))
    used = (kernels != 0).any(0).tolist()
    out = torch.zeros_like(stack)
    for tap in range(kernels.shape[1]):
        if used[tap]:
            out += weights[:, tap] * padded.narrow(dim, tap, length)
    return out


# ------------------------------------------------------------------------------------------------------ brightness


@dataclass(frozen=True)
class FactorParams:
    hit: Tensor  # (B,) bool: sample transformed (all its channels)
    factor: Tensor  # (B, C) float64 per channel


class BrightnessMultiplicative(BatchTransform[FactorParams]):
    """data[b, c] *= U(multiplier_range) for each channel of the hit samples (batchgenerators' per_channel=True)."""

    def __init__(self, p: float = 0.15, multiplier_range: Sequence[float] = (0.75, 1.25)):
        self.p = check_probability("p_brightness", p)
        self.multiplier_range = check_range("brightness multiplier_range", multiplier_range)

    def draw(self, gen: torch.Generator, batch_size: int, channels: int) -> FactorParams:
        return FactorParams(hits(gen, self.p, batch_size), uniform(gen, *self.multiplier_range, batch_size, channels))

    def apply(self, data: Tensor, seg: Tensor, params: FactorParams) -> tuple[Tensor, Tensor]:
        """data (B, C, *S): hit samples scaled per channel."""
        rows = sample_rows(params.hit, data.shape[1])
        factor = per_row(params.factor, rows, data.device, data.ndim - 2)
        return map_rows(data, rows, lambda stack: stack * factor), seg


# -------------------------------------------------------------------------------------------------------- contrast


class Contrast(BatchTransform[FactorParams]):
    """Per channel of the hit samples: (x - mean) * f + mean, clipped to the channel's former [min, max] if
    preserve_range. f as batchgenerators draws it: half the time U(low, 1), otherwise U(1, high)."""

    def __init__(self, p: float = 0.15, contrast_range: Sequence[float] = (0.75, 1.25), preserve_range: bool = True):
        self.p = check_probability("p_contrast", p)
        self.contrast_range = check_range("contrast_range", contrast_range)
        self.preserve_range = bool(preserve_range)

    def draw(self, gen: torch.Generator, batch_size: int, channels: int) -> FactorParams:
        return FactorParams(
            hits(gen, self.p, batch_size), split_uniform(gen, *self.contrast_range, batch_size, channels)
        )

    def apply(self, data: Tensor, seg: Tensor, params: FactorParams) -> tuple[Tensor, Tensor]:
        """data (B, C, *S): contrast of the hit samples changed per channel."""
        rows = sample_rows(params.hit, data.shape[1])
        factor = per_row(params.factor, rows, data.device, data.ndim - 2)

        def contrast(stack: Tensor) -> Tensor:
            flat = stack.reshape(stack.shape[0], -1)
            shape = (-1, *([1] * (stack.ndim - 1)))
            mean = flat.mean(1).reshape(shape)
            out = (stack - mean) * factor + mean
            if self.preserve_range:
                out = torch.minimum(torch.maximum(out, flat.amin(1).reshape(shape)), flat.amax(1).reshape(shape))
            return out

        return map_rows(data, rows, contrast), seg


# ----------------------------------------------------------------------------------------------------------- gamma


class Gamma(BatchTransform[FactorParams]):
    """Gamma per channel of the hit samples: x' = ((x - min) / (range + eps)) ** g * (range + eps) + min, on the
    negated image if `invert` (negated back after), then (retain_stats) shifted and scaled back to the channel's
    former mean and (population) standard deviation. g as batchgenerators draws it: half U(low, 1), half U(1, high).
    """

    EPSILON = 1e-7  # batchgenerators' epsilon added to the intensity range
    STD_EPSILON = 1e-8  # and to the standard deviation when retaining statistics

    def __init__(
        self,
        p: float,
        gamma_range: Sequence[float] = (0.7, 1.5),
        invert: bool = False,
        retain_stats: bool = True,
    ):
        self.p = check_probability("p_gamma", p)
        self.gamma_range = check_range("gamma_range", gamma_range, minimum=1e-6)
        self.invert, self.retain_stats = bool(invert), bool(retain_stats)

    def draw(self, gen: torch.Generator, batch_size: int, channels: int) -> FactorParams:
        return FactorParams(hits(gen, self.p, batch_size), split_uniform(gen, *self.gamma_range, batch_size, channels))

    def apply(self, data: Tensor, seg: Tensor, params: FactorParams) -> tuple[Tensor, Tensor]:
        """data (B, C, *S): gamma of the hit samples changed per channel."""
        rows = sample_rows(params.hit, data.shape[1])
        gamma = per_row(params.factor, rows, data.device, data.ndim - 2)
        return map_rows(data, rows, lambda stack: self._gamma(stack, gamma)), seg

    def _gamma(self, stack: Tensor, gamma: Tensor) -> Tensor:
        shape = (-1, *([1] * (stack.ndim - 1)))
        x = -stack if self.invert else stack
        flat = x.reshape(x.shape[0], -1)
        mean, std = flat.mean(1).reshape(shape), flat.std(1, correction=0).reshape(shape)
        low = flat.amin(1).reshape(shape)
        span = flat.amax(1).reshape(shape) - low + self.EPSILON
        x = ((x - low) / span) ** gamma * span + low
        if self.retain_stats:
            flat = x.reshape(x.shape[0], -1)
            x = x - flat.mean(1).reshape(shape)
            x = x / (flat.std(1, correction=0).reshape(shape) + self.STD_EPSILON) * std + mean
        return -x if self.invert else x
