"""Per-channel intensity normalisation schemes (docs/planning.md, rule 4), applied BEFORE resampling.

A normaliser is ``fn(channel, seg, use_mask, stats) -> float32 array`` with `channel` (Z, Y, X), `seg` the cropped
label map (-1 marks voxels outside the nonzero mask; None for none), `use_mask` the plans' ``use_mask_for_norm`` of
the channel and `stats` the dataset's foreground IntensityStats of the channel (needed by "ct" only).

Registered schemes (``normalizers`` registry; plugins may add more):
    ct              clip to the dataset foreground [p0.5, p99.5], then (x - mean) / max(std, 1e-8) (dataset stats)
    zscore          per image (x - mean) / max(std, 1e-8); with use_mask only voxels with seg >= 0, others 0
    rescale_to_0_1  per image min-max to [0, 1]
    rgb_to_0_1      x / 255 (values must lie in 0..255)
    none            unchanged (float32)
nnU-Net's names (CTNormalization, ZScoreNormalization, NoNormalization, noNorm, ...) resolve via `resolve_scheme`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from autoseg.errors import ConfigError
from autoseg.registry import Registry

Normalizer = Callable[[np.ndarray, "np.ndarray | None", bool, object], np.ndarray]
normalizers: Registry[Normalizer] = Registry("normalization scheme")

_ALIASES = {
    "ctnormalization": "ct",
    "zscorenormalization": "zscore",
    "z_score": "zscore",
    "nonormalization": "none",
    "nonorm": "none",
    "rescaleto01normalization": "rescale_to_0_1",
    "rgbto01normalization": "rgb_to_0_1",
}


def resolve_scheme(name: str) -> str:
    """Registered name for `name` (case-insensitive; nnU-Net class names accepted)."""
    if name in normalizers:
        return name
    key = name.lower()
    key = _ALIASES.get(key, key)
    normalizers.get(key)  # unknown -> ConfigError listing the known schemes
    return key


def _std(values: np.ndarray) -> float:
    return max(float(np.std(values, dtype=np.float64)), 1e-8)


@normalizers.register("ct")
def ct_normalize(channel: np.ndarray, seg, use_mask: bool, stats) -> np.ndarray:
    if stats is None:
        raise ConfigError(
            "the 'ct' normalisation needs the dataset's foreground intensity statistics: store them in the plans "
            "(Plans.intensity) or run `autoseg fingerprint` first"
        )
    out = np.clip(channel, stats.percentile_00_5, stats.percentile_99_5).astype(np.float32, copy=False)
    out -= np.float32(stats.mean)
    out /= np.float32(max(stats.std, 1e-8))
    return out


@normalizers.register("zscore")
def zscore_normalize(channel: np.ndarray, seg, use_mask: bool, stats) -> np.ndarray:
    out = np.asarray(channel, dtype=np.float32).copy()
    if use_mask and seg is not None:
        inside = seg >= 0
        values = out[inside]
        if values.size == 0:
            return np.zeros_like(out)
        mean, std = float(values.mean(dtype=np.float64)), _std(values)
        out[inside] = (values - np.float32(mean)) / np.float32(std)
        out[~inside] = 0
        return out
    mean, std = float(out.mean(dtype=np.float64)), _std(out)
    out -= np.float32(mean)
    out /= np.float32(std)
    return out


@normalizers.register("rescale_to_0_1")
def rescale_normalize(channel: np.ndarray, seg, use_mask: bool, stats) -> np.ndarray:
    out = np.asarray(channel, dtype=np.float32).copy()
    if out.size == 0:
        return out
    lo, hi = float(out.min()), float(out.max())
    out -= np.float32(lo)
    out /= np.float32(max(hi - lo, 1e-8))
    return out


@normalizers.register("rgb_to_0_1")
def rgb_normalize(channel: np.ndarray, seg, use_mask: bool, stats) -> np.ndarray:
    if channel.size and (channel.min() < 0 or channel.max() > 255):
        raise ConfigError(
            f"rgb_to_0_1 normalisation needs values in 0..255, found {channel.min():g}..{channel.max():g}; "
            "use 'zscore' or 'rescale_to_0_1' for this channel"
        )
    return np.asarray(channel, dtype=np.float32) / np.float32(255.0)


@normalizers.register("none")
def no_normalize(channel: np.ndarray, seg, use_mask: bool, stats) -> np.ndarray:
    return np.asarray(channel, dtype=np.float32)


def normalize(
    image: np.ndarray,
    seg: np.ndarray | None,
    schemes: tuple[str, ...],
    use_mask: tuple[bool, ...],
    stats: tuple | None = None,
    kwargs: Sequence[Mapping[str, Any]] = (),
) -> np.ndarray:
    """Normalise every channel of `image` (C, Z, Y, X) with its scheme -> new float32 array.

    kwargs: per channel, the scheme's keyword arguments (the plans' ``normalization_kwargs``; () for none)."""
    if len(schemes) != image.shape[0]:
        raise ConfigError(f"{len(schemes)} normalisation schemes for an image with {image.shape[0]} channels")
    out = np.empty(image.shape, dtype=np.float32)
    for c, (scheme, masked) in enumerate(zip(schemes, use_mask)):
        args = (image[c], seg, bool(masked), stats[c] if stats is not None else None)
        out[c] = normalizers.create(resolve_scheme(scheme), *args, kwargs=kwargs[c] if kwargs else None)
    return out
