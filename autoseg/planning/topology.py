"""Pure planning rules (nnU-Net v2's, re-implemented): spacing, transpose, shapes, patch, pooling schedule, batch size.

Every rule returns its value and, where the user may ask "why", a sentence with the numbers behind it
(`autoseg plan --explain` prints them). Spacings and shapes are numpy arrays; axis names are the original array
axes ("z", "y", "x"), so an explanation stays readable after the transpose.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from autoseg.errors import PlansError
from autoseg.planning.explain import axes_text, fmt, join_axes

AXIS_NAMES = ("z", "y", "x")
ANISOTROPY_THRESHOLD = 3.0
PATCH_VOLUME_3D = 256**3
PATCH_VOLUME_2D = 2048**2
MIN_FEATURE_MAP_EDGE = 4


# ---- spacing, transpose, shapes ------------------------------------------------------------------------------------
def fullres_target_spacing(
    spacings: np.ndarray, shapes: np.ndarray, threshold: float = ANISOTROPY_THRESHOLD
) -> tuple[np.ndarray, str]:
    """Per-axis median spacing; the coarsest axis takes its 10th percentile when both spacing and voxel count are
    anisotropic (median spacing > threshold x the finest other axis' and median size x threshold < the others')."""
    spacings, shapes = np.asarray(spacings, float), np.asarray(shapes, float)
    target = np.percentile(spacings, 50, axis=0)
    size = np.percentile(shapes, 50, axis=0)
    w = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != w]
    max_other = max(target[i] for i in others)
    min_size = min(size[i] for i in others)
    aniso_spacing = target[w] > threshold * max_other
    aniso_voxels = size[w] * threshold < min_size
    name = AXIS_NAMES[w]
    facts = (
        f"median {name} spacing {fmt(target[w])} {'>' if aniso_spacing else '<='} {fmt(threshold)} x "
        f"{fmt(max_other)} (other axes) and {fmt(size[w])} slices x {fmt(threshold)} "
        f"{'<' if aniso_voxels else '>='} {fmt(min_size)}"
    )
    if aniso_spacing and aniso_voxels:
        p10 = float(np.percentile(spacings[:, w], 10))
        value = p10 if p10 >= max_other else max(max_other, p10) + 1e-5
        clip = "" if p10 >= max_other else f" (10th percentile {fmt(p10)} raised to just above {fmt(max_other)})"
        target[w] = value
        why = f"{name} target {fmt(value)} mm: 10th percentile{clip}, because {facts}"
    else:
        why = f"{name} target {fmt(target[w])} mm: median (anisotropy rule not applied: {facts})"
    return target, f"target spacing {axes_text(target)} mm (medians); {why}"


def transpose_forward(target_spacing: Sequence[float]) -> tuple[tuple[int, ...], str]:
    """Coarsest axis first, the others keep their order."""
    w = int(np.argmax(target_spacing))
    order = (w, *[i for i in range(len(target_spacing)) if i != w])
    names = ", ".join(AXIS_NAMES[i] for i in order)
    return order, f"axis order ({names}): the coarsest axis ({AXIS_NAMES[w]}, {fmt(target_spacing[w])} mm) first"


def resampled_shape(shape: Sequence[float], spacing: Sequence[float], new_spacing: Sequence[float]) -> list[int]:
    """round(old_spacing / new_spacing * old_shape) per axis (Python rounding, half to even)."""
    return [int(round(float(sp) / float(ns) * float(sh))) for sh, sp, ns in zip(shape, spacing, new_spacing)]


def median_resampled_shape(spacings: np.ndarray, shapes: np.ndarray, target: Sequence[float]) -> np.ndarray:
    """Median over cases of every case's shape after resampling to `target` (may be a .5 value)."""
    new = [resampled_shape(sh, sp, target) for sp, sh in zip(spacings, shapes)]
    return np.median(np.asarray(new, float), axis=0)


# ---- patch and network topology ------------------------------------------------------------------------------------
def initial_patch_size(spacing: Sequence[float], median_shape: Sequence[float]) -> np.ndarray:
    """Aspect ratio 1/spacing scaled to 256^3 (3D) or 2048^2 (2D) voxels, rounded, clipped to the median shape."""
    inv = 1.0 / np.asarray(spacing, float)
    volume = PATCH_VOLUME_3D if len(inv) == 3 else PATCH_VOLUME_2D
    scaled = [round(float(v)) for v in inv * (volume / np.prod(inv)) ** (1.0 / len(inv))]
    return np.array([min(a, float(b)) for a, b in zip(scaled, median_shape)], dtype=float)


@dataclass(frozen=True)
class Topology:
    patch_size: tuple[int, ...]  # padded to `divisor`
    strides: tuple[tuple[int, ...], ...]  # stage 0 all ones
    kernel_sizes: tuple[tuple[int, ...], ...]  # last (bottleneck) all 3
    pools_per_axis: tuple[int, ...]

    @property
    def n_stages(self) -> int:
        return len(self.strides)

    @property
    def divisor(self) -> tuple[int, ...]:
        return tuple(2**p for p in self.pools_per_axis)


def pad_to_divisible(shape: Sequence[float], divisor: Sequence[int]) -> tuple[int, ...]:
    """Smallest multiple of `divisor` that is >= shape, per axis."""
    return tuple(int(math.ceil(float(s) / d) * d) for s, d in zip(shape, divisor))


def pool_schedule(
    spacing: Sequence[float], patch_size: Sequence[float], min_edge: int = MIN_FEATURE_MAP_EDGE
) -> Topology:
    """Spacing-aware pooling: each stage halves every axis that is >= 2*min_edge voxels and whose current spacing is
    < 2x the finest current spacing among those axes (a lone axis needs >= 3*min_edge). An axis' kernel becomes 3 (for
    good) once its spacing is within 2x of the finest; the bottleneck kernel is all 3. The patch is padded to a
    multiple of 2**pools per axis."""
    dim = len(spacing)
    cur_sp, cur_sz = [float(s) for s in spacing], [float(p) for p in patch_size]
    pools, kernel = [0] * dim, [1] * dim
    strides, kernels = [(1,) * dim], []
    while True:
        axes = [i for i in range(dim) if cur_sz[i] >= 2 * min_edge]
        if not axes:
            break
        finest = min(cur_sp[i] for i in axes)
        axes = [i for i in axes if cur_sp[i] / finest < 2]
        if not axes or (len(axes) == 1 and cur_sz[axes[0]] < 3 * min_edge):
            break
        overall_finest = min(cur_sp)
        kernel = [3 if k == 3 or cur_sp[d] / overall_finest < 2 else 1 for d, k in enumerate(kernel)]
        for i in axes:
            pools[i] += 1
            cur_sp[i] *= 2
            cur_sz[i] = math.ceil(cur_sz[i] / 2)
        strides.append(tuple(2 if i in axes else 1 for i in range(dim)))
        kernels.append(tuple(kernel))
    kernels.append((3,) * dim)
    patch = pad_to_divisible(patch_size, [2**p for p in pools])
    return Topology(patch, tuple(strides), tuple(kernels), tuple(pools))


def features_per_stage(n_stages: int, base: int = 32, maximum: int = 320) -> list[int]:
    return [min(maximum, base * 2**i) for i in range(n_stages)]


def axis_to_shrink(patch_size: Sequence[int], median_shape: Sequence[float]) -> int:
    """The axis largest relative to the median shape (ties: the last such axis)."""
    ratios = [p / float(m) for p, m in zip(patch_size, median_shape)]
    best = max(ratios)
    return max(i for i, r in enumerate(ratios) if r == best)


def shrink_patch(
    spacing: Sequence[float],
    median_shape: Sequence[float],
    topo: Topology,
    too_big: Callable[[Topology], bool],
    min_edge: int = MIN_FEATURE_MAP_EDGE,
) -> tuple[Topology, int]:
    """Shrink the patch until `too_big(topology)` is False; returns (topology, number of steps).

    Each step reduces the axis largest relative to the median shape by the divisibility factor that the patch
    *with that axis already reduced* would need (so 256 -> 224 is possible, not only 256 -> 192), then re-derives
    the topology (stages may disappear)."""
    steps = 0
    while too_big(topo):
        axis = axis_to_shrink(topo.patch_size, median_shape)
        trial = list(topo.patch_size)
        trial[axis] -= topo.divisor[axis]
        step = pool_schedule(spacing, trial, min_edge).divisor[axis]
        patch = list(topo.patch_size)
        patch[axis] -= step
        if patch[axis] < 1:
            raise PlansError(f"cannot shrink the patch {topo.patch_size} any further to fit the GPU memory budget")
        topo = pool_schedule(spacing, patch, min_edge)
        steps += 1
    return topo, steps


def topology_text(topo: Topology, spacing: Sequence[float], names: Sequence[str]) -> str:
    pools = join_axes(names, topo.pools_per_axis)
    return (
        f"{topo.n_stages} stages, pooling per axis {pools} (spacing {axes_text(spacing, names)} mm, "
        f"min feature map edge {MIN_FEATURE_MAP_EDGE}); patch padded to multiples of "
        f"{'x'.join(str(d) for d in topo.divisor)}; first kernels {list(topo.kernel_sizes[0])}"
    )


# ---- batch size ------------------------------------------------------------------------------------------------------
def batch_size(
    reference: float,
    estimate: float,
    ref_batch: int,
    n_voxels_dataset: float,
    patch_size: Sequence[int],
    max_covered: float = 0.05,
    min_batch: int = 2,
) -> tuple[int, str]:
    """round(reference / estimate * ref_batch), capped so one batch covers <= max_covered of the dataset's voxels,
    never below min_batch."""
    by_memory = round(reference / estimate * ref_batch)
    cap = round(n_voxels_dataset * max_covered / float(np.prod(patch_size, dtype=np.float64)))
    value = max(min(by_memory, cap), min_batch)
    why = f"batch size {value}: memory allows {by_memory} (reference {reference:.3g} / estimate {estimate:.3g}"
    why += f" x {ref_batch})"
    if max_covered < 1:
        why += f", {fmt(100 * max_covered)} % dataset cap {cap}"
    if value == min_batch and min(by_memory, cap) < min_batch:
        why += f", raised to the minimum {min_batch}"
    return value, why


# ---- normalisation ---------------------------------------------------------------------------------------------------
NORMALIZATION_BY_CHANNEL_NAME = {
    "ct": "ct",
    "nonorm": "none",
    "zscore": "zscore",
    "rescale_to_0_1": "rescale_to_0_1",
    "rgb_to_0_1": "rgb_to_0_1",
}
MASKABLE_NORMALIZATIONS = ("zscore",)  # only z-score leaves the outside at 0 when normalising inside the mask
MASK_FOR_NORM_MAX_RELATIVE_SIZE = 0.75


def normalization_schemes(
    channel_names: Sequence[str], median_relative_size_after_cropping: float
) -> tuple[tuple[str, ...], tuple[bool, ...], list[str]]:
    """Scheme per channel from its name (case-insensitive; unknown names -> "zscore"), and use_mask_for_norm: True
    for z-score channels when cropping to the nonzero region removed more than a quarter of the image."""
    schemes = tuple(NORMALIZATION_BY_CHANNEL_NAME.get(str(c).lower(), "zscore") for c in channel_names)
    cropped = median_relative_size_after_cropping < MASK_FOR_NORM_MAX_RELATIVE_SIZE
    masks = tuple(cropped and s in MASKABLE_NORMALIZATIONS for s in schemes)
    rel = fmt(median_relative_size_after_cropping)
    why = []
    for c, (name, s, m) in enumerate(zip(channel_names, schemes, masks)):
        known = str(name).lower() in NORMALIZATION_BY_CHANNEL_NAME
        source = f"channel name {name!r}" if known else f"channel name {name!r} is not a scheme name -> default"
        if m:
            mask = f"inside the nonzero mask, because median relative size after cropping {rel} < 0.75"
        elif s not in MASKABLE_NORMALIZATIONS:
            mask = "whole image (the mask is only used with zscore)"
        else:
            mask = f"whole image, because median relative size after cropping {rel} >= 0.75"
        why.append(f"channel {c} normalisation {s} ({source}), {mask}")
    return schemes, masks, why
