"""`BatchPipeline`: an editable list of batch transforms plus the deep-supervision finish, and nnU-Net's default
training and validation pipelines built from an `AugmentSpec`.

The transform list is plain data: to change the augmentation, build `BatchPipeline(sample_size, transforms, finish)`
from `default_transforms(spec)` with items removed, replaced or added (any `BatchTransform`: a class with `draw` and
`apply`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from autoseg.errors import ConfigError
from autoseg.training.augment import AugmentSpec, initial_patch_size
from autoseg.training.batch_augment.base import BatchTransform
from autoseg.training.batch_augment.cascade import PrevStageToData
from autoseg.training.batch_augment.finish import DeepSupervisionTargets, MaskOutside, ReplaceLabel
from autoseg.training.batch_augment.intensity import (
    BrightnessMultiplicative,
    Contrast,
    Gamma,
    GaussianBlur,
    GaussianNoise,
)
from autoseg.training.batch_augment.resolution import SimulateLowResolution
from autoseg.training.batch_augment.spatial import Mirror, Spatial

SEG_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64)
DATA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class BatchPipeline:
    """Sampler crops -> network batch, on the device the crops live on.

    sample_size: spatial size of the crops the sampler must provide. transforms: applied in order. finish: seg
    (B, 1, *patch) -> the list of int64 deep-supervision targets.
    """

    def __init__(
        self,
        sample_size: Sequence[int],
        transforms: Sequence[BatchTransform[Any]],
        finish: Callable[[Tensor], list[Tensor]],
    ):
        self.sample_size = tuple(int(v) for v in sample_size)
        self.transforms: list[BatchTransform[Any]] = list(transforms)
        bad = [t for t in self.transforms if not isinstance(t, BatchTransform)]
        if bad:
            raise ConfigError(f"batch transforms must be BatchTransform objects (draw + apply), got {bad!r}")
        self.finish = finish

    def draw(self, gen: torch.Generator, batch_size: int, channels: int) -> list[Any]:
        """Every transform's parameters for a batch (B = batch_size, C = image channels), from the CPU `gen`."""
        if gen.device.type != "cpu":
            raise ValueError(f"batch augmentation draws from a CPU torch.Generator, got one on {gen.device}")
        return [t.draw(gen, int(batch_size), int(channels)) for t in self.transforms]

    def apply(self, data: Tensor, seg: Tensor, params: Sequence[Any]) -> tuple[Tensor, list[Tensor]]:
        """data (B, C, *sample_size) float16/32, seg (B, 1 or 2, *sample_size) signed int (-1 outside the image) ->
        (data float32 (B, C', *patch), targets: int64 (B, 1, *patch // f) per deep-supervision factor f).

        The inputs are not modified (the pipeline works on its own float32 / contiguous copies).
        """
        if data.dtype not in DATA_DTYPES or seg.dtype not in SEG_DTYPES:
            raise TypeError(
                f"batch augmentation needs floating data and signed integer seg, got {data.dtype} and {seg.dtype}"
            )
        if tuple(data.shape[2:]) != self.sample_size or tuple(seg.shape[2:]) != self.sample_size:
            raise ValueError(
                f"batch augmentation expects crops of spatial size {self.sample_size}, got data {tuple(data.shape)} "
                f"and seg {tuple(seg.shape)}"
            )
        if data.shape[0] != seg.shape[0] or data.device != seg.device:
            raise ValueError(
                f"data {tuple(data.shape)} on {data.device} and seg {tuple(seg.shape)} on {seg.device} differ"
            )
        if len(params) != len(self.transforms):
            raise ValueError(f"{len(params)} parameter sets for {len(self.transforms)} transforms: use draw()")
        data = data.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        seg = seg.clone(memory_format=torch.contiguous_format)
        for transform, p in zip(self.transforms, params):
            data, seg = transform.apply(data, seg, p)
        return data, self.finish(seg)

    def __call__(self, data: Tensor, seg: Tensor, gen: torch.Generator) -> tuple[Tensor, list[Tensor]]:
        """draw + apply: the augmented batch of the crops (see `apply`)."""
        return self.apply(data, seg, self.draw(gen, data.shape[0], data.shape[1]))


def default_transforms(spec: AugmentSpec) -> list[BatchTransform[Any]]:
    """nnU-Net's training transforms for `spec`, in order (as `autoseg.training.augment.default_pipeline`)."""
    ndim = len(spec.patch_size)
    gamma = (0.7, 1.5)
    transforms: list[BatchTransform[Any]] = [
        Spatial(spec.patch_size, spec.rotation, spec.dummy_2d, p_rotation=0.2, p_scaling=0.2, scale_range=(0.7, 1.4)),
        GaussianNoise(p=0.1, sigma_range=(0.0, 0.1)),
        GaussianBlur(ndim, p=0.2, p_per_channel=0.5, sigma_range=(0.5, 1.0)),
        BrightnessMultiplicative(p=0.15, multiplier_range=(0.75, 1.25)),
        Contrast(p=0.15, contrast_range=(0.75, 1.25), preserve_range=True),
        SimulateLowResolution(
            ndim, p=0.25, p_per_channel=0.5, zoom_range=(0.5, 1.0), ignore_axes=(0,) if spec.dummy_2d else ()
        ),
        Gamma(p=0.1, gamma_range=gamma, invert=True, retain_stats=True),
        Gamma(p=0.3, gamma_range=gamma, invert=False, retain_stats=True),
    ]
    if spec.mirror_axes:
        transforms.append(Mirror(spec.mirror_axes))
    return transforms + _finishing_transforms(spec, training=True)


def _finishing_transforms(spec: AugmentSpec, training: bool) -> list[BatchTransform[Any]]:
    """Masking (training only), -1 -> 0 and the cascade's one-hot channels (degraded in training only)."""
    out: list[BatchTransform[Any]] = [MaskOutside(spec.mask_channels)] if spec.mask_channels and training else []
    out.append(ReplaceLabel(-1, 0))
    if spec.prev_stage_labels:
        probabilities = (0.4, 0.2) if training else (0.0, 0.0)
        out.append(PrevStageToData(spec.prev_stage_labels, *probabilities))
    return out


def torch_default_pipeline(spec: AugmentSpec) -> BatchPipeline:
    """nnU-Net's training augmentation: the sampler crops `initial_patch_size(...)`, the result is `spec.patch_size`."""
    size = initial_patch_size(spec.patch_size, spec.rotation, spec.dummy_2d)
    return BatchPipeline(size, default_transforms(spec), DeepSupervisionTargets(spec.ds_factors))


def torch_validation_pipeline(spec: AugmentSpec) -> BatchPipeline:
    """No augmentation: crops of `spec.patch_size`, -1 -> 0, cascade one-hot (not degraded), DS targets."""
    return BatchPipeline(
        spec.patch_size, _finishing_transforms(spec, training=False), DeepSupervisionTargets(spec.ds_factors)
    )
