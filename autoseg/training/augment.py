"""Augmentation settings (`AugmentSpec`), the `augmentations` registry, and the batchgenerators v1 pipelines.

A pipeline is looked up by name in the `augmentations` registry (`autoseg.training.pipelines.build_pipeline`, which
also registers the batched torch pipeline "default") and built from an `AugmentSpec` (derived from a plans
configuration by `augment_spec`). This module's pipelines are "batchgenerators" (the reference) and "none"; each
receives the sampler's crops, `data` (B, C, *sample_size) float32 and `seg` (B, 1, *sample_size) with -1 outside the
image, and returns `(data (B, C, *patch) float32, targets)`, one int64 target (B, 1, *patch // factor) per
deep-supervision scale. batchgenerators' dict conventions stay inside this module.

"batchgenerators" follows nnU-Net's order and probabilities: spatial (rotation p 0.2, scaling p 0.2 in [0.7, 1.4], no
elastic; in-plane only for "dummy 2D" patches), Gaussian noise, Gaussian blur, multiplicative brightness, contrast,
low-resolution simulation, inverted gamma, gamma, mirroring, masking outside the nonzero region, -1 -> 0, deep
supervision. A cascade stage (`AugmentSpec.prev_stage_labels`) gets seg (B, 2, ...) whose channel 1, the previous
stage's map, is transformed like the label and then moved into the data as one-hot channels (`PrevStageToData`,
degraded during training by random dilation/erosion and connected-component removal). Images are interpolated
linearly (as nnU-Net v2's grid_sample does) and labels with nearest neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    ContrastAugmentationTransform,
    GammaTransform,
)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform
from batchgenerators.transforms.utility_transforms import RemoveLabelTransform
from scipy import ndimage

from autoseg.planning.plans import Configuration
from autoseg.preprocessing.cascade import one_hot
from autoseg.registry import Registry

DUMMY_2D_ASPECT = 3.0  # 3D patches with max(patch) / patch[0] above this are augmented in-plane only
MIN_SCALE_FOR_INITIAL_PATCH = 0.85  # the sampler's larger crop covers rotation and zoom-out down to this scale
ORDER_DATA = 1  # image interpolation order in the spatial transform (linear)


@dataclass(frozen=True)
class AugmentSpec:
    """Everything a pipeline factory needs, derived from a configuration (see `augment_spec`)."""

    patch_size: tuple[int, ...]  # final patch (2 or 3 values)
    ds_factors: tuple[tuple[int, ...], ...]  # per deep-supervision output: integer downsampling per axis
    rotation: float  # max |angle| in radians
    dummy_2d: bool  # 3D patch augmented slice-wise (spatial and low-resolution in-plane only)
    mirror_axes: tuple[int, ...]
    mask_channels: tuple[int, ...] = ()  # channels set to 0 outside the nonzero region (use_mask_for_norm)
    prev_stage_labels: tuple[int, ...] = ()  # cascade: labels of the previous stage's map (seg channel 1)


@dataclass(frozen=True)
class Pipeline:
    """A built pipeline: the sampler crops `sample_size`, `__call__` turns those crops into network batches."""

    sample_size: tuple[int, ...]
    transform: Callable[..., dict]

    def __call__(self, data: np.ndarray, seg: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        out = self.transform(data=data, seg=seg)
        return np.ascontiguousarray(out["data"], dtype=np.float32), out["target"]


class AugmentationPipeline(Protocol):
    """What every registered pipeline has: the crop size the sampler must cut (`Pipeline`, or the batched torch
    `batch_augment.BatchPipeline`)."""

    sample_size: tuple[int, ...]


augmentations: Registry[Callable[[AugmentSpec], AugmentationPipeline]] = Registry("augmentation")


def deep_supervision_factors(strides: Sequence[Sequence[int]], deep_supervision: bool) -> tuple[tuple[int, ...], ...]:
    """Downsampling factors of the targets: cumulative stride products of all stages but the last (scale 1 first).

    Example: strides [[1,1,1],[2,2,2],[2,2,1]] -> ((1,1,1), (2,2,2)); only ((1,1,1),) without deep supervision.
    """
    cum = np.cumprod(np.asarray(strides, dtype=np.int64), axis=0)
    factors = tuple(tuple(int(v) for v in row) for row in cum[:-1]) or (tuple(1 for _ in strides[0]),)
    return factors if deep_supervision else factors[:1]


def rotation_settings(patch_size: Sequence[int]) -> tuple[float, bool]:
    """(max rotation in radians, dummy_2d) for a patch, by nnU-Net's rules."""
    if len(patch_size) == 2:
        return (math.radians(15) if max(patch_size) / min(patch_size) > 1.5 else math.pi), False
    dummy = max(patch_size) / patch_size[0] > DUMMY_2D_ASPECT
    return (math.pi if dummy else math.radians(30)), dummy


def _rotated_extent(size: tuple[float, float], max_angle: float) -> np.ndarray:
    """Bounding box of a (a, b) rectangle rotated by any angle in [0, max_angle] (at most 90 degrees matter)."""
    angles = np.linspace(0.0, min(max_angle, math.pi / 2), 91)
    c, s = np.abs(np.cos(angles)), np.abs(np.sin(angles))
    a, b = size
    return np.array([np.max(a * c + b * s), np.max(a * s + b * c)])


def initial_patch_size(patch_size: Sequence[int], rotation: float, dummy_2d: bool) -> tuple[int, ...]:
    """Size of the crop taken before spatial augmentation, so rotated/zoomed-out patches need little padding."""
    patch = np.asarray(patch_size, dtype=float)
    extent = patch.copy()
    planes = [(0, 1)] if len(patch) == 2 else ([(1, 2)] if dummy_2d else [(1, 2), (0, 2), (0, 1)])
    for i, j in planes:
        ext = _rotated_extent((patch[i], patch[j]), rotation)
        extent[i], extent[j] = max(extent[i], ext[0]), max(extent[j], ext[1])
    size = np.floor(extent / MIN_SCALE_FOR_INITIAL_PATCH).astype(int)
    if dummy_2d:
        size[0] = int(patch[0])
    return tuple(int(v) for v in np.maximum(size, patch.astype(int)))


def augment_spec(configuration: Configuration, deep_supervision: bool = True, prev_stage_labels=()) -> AugmentSpec:
    """AugmentSpec of a plans `Configuration` (patch size, network strides, use_mask_for_norm); a cascade stage
    passes its foreground labels as `prev_stage_labels`."""
    patch = tuple(int(v) for v in configuration.patch_size)
    strides = configuration.network.params.get("strides") or [[1] * len(patch)]
    rotation, dummy = rotation_settings(patch)
    return AugmentSpec(
        patch_size=patch,
        ds_factors=deep_supervision_factors(strides, deep_supervision),
        rotation=rotation,
        dummy_2d=dummy,
        mirror_axes=tuple(range(len(patch))),
        mask_channels=tuple(i for i, m in enumerate(configuration.use_mask_for_norm) if m),
        prev_stage_labels=tuple(int(v) for v in prev_stage_labels),
    )


class _SlicesToChannels(AbstractTransform):
    """(B, C, Z, Y, X) -> (B, C*Z, Y, X) so a 2D transform acts on every slice alike (dummy 2D)."""

    def __call__(self, **batch):
        for key in ("data", "seg"):
            arr = batch[key]
            batch[f"_{key}_shape"] = arr.shape
            batch[key] = arr.reshape(arr.shape[0], arr.shape[1] * arr.shape[2], *arr.shape[3:])
        return batch


class _ChannelsToSlices(AbstractTransform):
    """Inverse of `_SlicesToChannels` (after the in-plane spatial transform)."""

    def __call__(self, **batch):
        for key in ("data", "seg"):
            b, c, z = batch.pop(f"_{key}_shape")[:3]
            batch[key] = batch[key].reshape(b, c, z, *batch[key].shape[2:])
        return batch


class _MaskOutside(AbstractTransform):
    """Set the given image channels to 0 where the label is -1 (outside the nonzero region)."""

    def __init__(self, channels: tuple[int, ...]):
        self.channels = channels

    def __call__(self, **batch):
        outside = batch["seg"][:, 0] < 0
        for c in self.channels:
            batch["data"][:, c][outside] = 0
        return batch


class _DeepSupervisionTargets(AbstractTransform):
    """seg (B, 1, *patch) -> batch["target"]: list of int64 (B, 1, *patch // f), nearest neighbour per factor.

    Picks voxel f // 2 of each block of f (torch's "nearest-exact" for integer factors).
    """

    def __init__(self, factors: tuple[tuple[int, ...], ...]):
        self.factors = factors

    def __call__(self, **batch):
        seg = batch.pop("seg")
        targets = []
        for f in self.factors:
            sl = (slice(None), slice(None)) + tuple(slice(k // 2, None, k) for k in f)
            targets.append(np.ascontiguousarray(seg[sl], dtype=np.int64))
        batch["target"] = targets
        return batch


class PrevStageToData(AbstractTransform):
    """Cascade: seg channel 1 (previous stage's map) -> one-hot data channels (one per label); seg keeps channel 0.

    Training degradation (numpy's global generator, like the other transforms), per sample and label channel: with
    `p_morph` a binary dilation or erosion of 1-8 iterations (a dilated label takes its voxels from the others), and
    with `p_component` the removal of one random connected component.
    """

    def __init__(self, labels: Sequence[int], p_morph: float = 0.4, p_component: float = 0.2):
        self.labels, self.p_morph, self.p_component = tuple(labels), p_morph, p_component

    def __call__(self, **batch):
        seg = batch["seg"]
        hot = np.stack([one_hot(s, self.labels) for s in seg[:, 1]])
        if self.p_morph > 0 or self.p_component > 0:
            for b in range(hot.shape[0]):
                self._degrade(hot[b])
        batch["data"] = np.concatenate([batch["data"], hot], axis=1)
        batch["seg"] = seg[:, :1]
        return batch

    def _degrade(self, hot: np.ndarray) -> None:
        for c in range(hot.shape[0]):
            if np.random.uniform() < self.p_morph:
                iterations = int(np.random.randint(1, 9))
                if np.random.uniform() < 0.5:
                    grown = ndimage.binary_dilation(hot[c] > 0, iterations=iterations)
                    hot[:, grown] = 0
                    hot[c][grown] = 1
                else:
                    hot[c] = ndimage.binary_erosion(hot[c] > 0, iterations=iterations)
            if np.random.uniform() < self.p_component:
                components, n = ndimage.label(hot[c] > 0)
                if n:
                    hot[c][components == int(np.random.randint(1, n + 1))] = 0


def spatial_transforms(spec: AugmentSpec, p_rotation: float = 0.2, p_scaling: float = 0.2) -> list[AbstractTransform]:
    """Rotation and scaling (no elastic deformation) with the final crop; in-plane per slice for dummy 2D."""
    patch = spec.patch_size[1:] if spec.dummy_2d else spec.patch_size
    angle = (-spec.rotation, spec.rotation)
    spatial = SpatialTransform(
        patch,
        patch_center_dist_from_border=None,
        do_elastic_deform=False,
        do_rotation=True,
        angle_x=angle,
        angle_y=angle,
        angle_z=angle,
        p_rot_per_axis=1,
        do_scale=True,
        scale=(0.7, 1.4),
        border_mode_data="constant",
        border_cval_data=0,
        order_data=ORDER_DATA,
        border_mode_seg="constant",
        border_cval_seg=-1,
        order_seg=0,
        random_crop=False,
        p_el_per_sample=0,
        p_scale_per_sample=p_scaling,
        p_rot_per_sample=p_rotation,
        independent_scale_for_each_axis=False,
    )
    return [_SlicesToChannels(), spatial, _ChannelsToSlices()] if spec.dummy_2d else [spatial]


@augmentations.register("batchgenerators")
def default_pipeline(spec: AugmentSpec) -> Pipeline:
    """nnU-Net's training augmentation with batchgenerators v1 on numpy (see the module docstring): the reference
    for A/B runs against the batched torch pipeline ("default", `autoseg.training.batch_augment`)."""
    gamma = (0.7, 1.5)
    transforms = spatial_transforms(spec) + [
        GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_sample=0.1),
        GaussianBlurTransform(
            (0.5, 1.0),
            different_sigma_per_channel=True,
            different_sigma_per_axis=True,
            p_per_sample=0.2,
            p_per_channel=0.5,
        ),
        BrightnessMultiplicativeTransform(multiplier_range=(0.75, 1.25), p_per_sample=0.15),
        ContrastAugmentationTransform(contrast_range=(0.75, 1.25), preserve_range=True, p_per_sample=0.15),
        SimulateLowResolutionTransform(
            zoom_range=(0.5, 1),
            per_channel=True,
            p_per_channel=0.5,
            order_downsample=0,
            order_upsample=1,
            p_per_sample=0.25,
            ignore_axes=(0,) if spec.dummy_2d else None,
        ),
        GammaTransform(gamma, invert_image=True, per_channel=True, retain_stats=True, p_per_sample=0.1),
        GammaTransform(gamma, invert_image=False, per_channel=True, retain_stats=True, p_per_sample=0.3),
    ]
    if spec.mirror_axes:
        transforms.append(MirrorTransform(spec.mirror_axes))
    if spec.mask_channels:
        transforms.append(_MaskOutside(spec.mask_channels))
    transforms.append(RemoveLabelTransform(-1, 0))
    if spec.prev_stage_labels:
        transforms.append(PrevStageToData(spec.prev_stage_labels))
    transforms.append(_DeepSupervisionTargets(spec.ds_factors))
    rotation, dummy = spec.rotation, spec.dummy_2d
    return Pipeline(initial_patch_size(spec.patch_size, rotation, dummy), Compose(transforms))


@augmentations.register("none")
def no_augmentation(spec: AugmentSpec) -> Pipeline:
    """Validation / benchmarks: crops of the final patch size, only -1 -> 0 and deep-supervision targets."""
    cascade = [PrevStageToData(spec.prev_stage_labels, 0.0, 0.0)] if spec.prev_stage_labels else []
    transforms = [RemoveLabelTransform(-1, 0), *cascade, _DeepSupervisionTargets(spec.ds_factors)]
    return Pipeline(spec.patch_size, Compose(transforms))
