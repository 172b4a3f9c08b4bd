"""The deterministic last steps: mask image channels outside the image, label -1 -> 0, deep-supervision targets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from autoseg.errors import ConfigError
from autoseg.training.batch_augment.base import BatchTransform


class MaskOutside(BatchTransform[None]):
    """Set image `channels` to 0 where seg channel 0 is negative (outside the nonzero region, use_mask_for_norm)."""

    def __init__(self, channels: Sequence[int]):
        self.channels = tuple(int(c) for c in channels)
        if any(c < 0 for c in self.channels):
            raise ConfigError(f"mask channels must be channel indices >= 0, got {tuple(channels)}")

    def draw(self, gen: torch.Generator, batch_size: int, channels: int) -> None:
        return None

    def apply(self, data: Tensor, seg: Tensor, params: None) -> tuple[Tensor, Tensor]:
        """data (B, C, *S), seg (B, Cs, *S): data[:, c][seg[:, 0] < 0] = 0 for c in channels."""
        if not self.channels:
            return data, seg
        if max(self.channels) >= data.shape[1]:
            raise ValueError(f"mask channels {self.channels} do not exist in data with {data.shape[1]} channels")
        index = torch.tensor(self.channels, device=data.device)
        outside = seg[:, :1] < 0
        data[:, index] = data[:, index].masked_fill(outside, 0.0)
        return data, seg


class ReplaceLabel(BatchTransform[None]):
    """seg[seg == old] = new in every seg channel (default: -1, outside the image, becomes background)."""

    def __init__(self, old: int = -1, new: int = 0):
        self.old, self.new = int(old), int(new)

    def draw(self, gen: torch.Generator, batch_size: int, channels: int) -> None:
        return None

    def apply(self, data: Tensor, seg: Tensor, params: None) -> tuple[Tensor, Tensor]:
        """seg (B, Cs, *S) with old replaced; data untouched."""
        return data, seg.masked_fill(seg == self.old, self.new)


class DeepSupervisionTargets:
    """seg (B, 1, *patch) -> one int64 target (B, 1, *ceil((patch - f // 2) / f)) per factor f (patch // f when f
    divides the patch): voxel f // 2 of each block of f, i.e. nearest neighbour ("nearest-exact")."""

    def __init__(self, factors: Sequence[Sequence[int]]):
        self.factors = tuple(tuple(int(v) for v in f) for f in factors)
        if not self.factors or any(v < 1 for f in self.factors for v in f):
            raise ConfigError(f"deep-supervision factors must be positive integers, got {factors!r}")

    def __call__(self, seg: Tensor) -> list[Tensor]:
        if seg.shape[1] != 1:
            raise ValueError(f"deep-supervision targets need seg with 1 channel, got shape {tuple(seg.shape)}")
        targets = []
        for f in self.factors:
            if len(f) != seg.ndim - 2:
                raise ValueError(f"deep-supervision factor {f} does not match seg of shape {tuple(seg.shape)}")
            index = (slice(None), slice(None)) + tuple(slice(k // 2, None, k) for k in f)
            targets.append(seg[index].to(torch.int64).contiguous())
        return targets
