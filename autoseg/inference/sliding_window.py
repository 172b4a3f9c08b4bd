"""Sliding-window inference on tensors: overlapping tiles, Gaussian importance weighting, mirror test-time augmentation.

The image is covered by patch-sized tiles whose start positions per axis follow nnU-Net's rule (step 0.5 of the
patch by default, spread evenly so the last tile ends at the border). Each tile's logits are multiplied by a Gaussian
centred on the patch (sigma = patch/8) and summed into an accumulator; the summed weights divide it at the end, so
tile borders (where the network sees little context) count less than tile centres. With mirror axes, every subset of
them is evaluated (flip input, predict, flip back) and the passes are averaged (3 axes: 8 passes).

Several tiles go through the network in one forward pass (`batch_tiles`). On CUDA the accumulators live on the GPU
and the forward runs under autocast; if the GPU runs out of memory the accumulators move to host memory and the
case is redone one tile at a time. A 2D network on a 3D image runs slice by slice along axis 0
(`predict_2d_from_3d`), batching tiles of several slices together.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from autoseg.log import logger

Slicer = tuple


def tile_positions(image_shape: Sequence[int], patch_size: Sequence[int], step: float = 0.5) -> list[list[int]]:
    """Start positions of the tiles along each axis.

    Per axis: ``n = ceil((size - patch) / (patch * step)) + 1`` tiles, starts ``round(i * (size - patch) / (n - 1))``,
    so the first tile starts at 0 and the last ends at the border. Needs ``size >= patch`` on every axis.
    """
    if len(image_shape) != len(patch_size):
        raise ValueError(f"image shape {tuple(image_shape)} and patch size {tuple(patch_size)} differ in length")
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    positions = []
    for size, patch in zip(image_shape, patch_size):
        if size < patch:
            raise ValueError(f"image shape {tuple(image_shape)} is smaller than the patch {tuple(patch_size)}")
        n = math.ceil((size - patch) / (patch * step)) + 1
        stride = (size - patch) / (n - 1) if n > 1 else 0.0
        positions.append([int(round(i * stride)) for i in range(n)])
    return positions


SIGMA_SCALE = 1.0 / 8  # Gaussian tile weight: sigma = patch * SIGMA_SCALE


@lru_cache(maxsize=16)
def _gaussian_np(patch_size: tuple[int, ...], sigma_scale: float) -> np.ndarray:
    axes = []
    for p in patch_size:
        x = np.arange(p, dtype=np.float64) - (p - 1) / 2.0
        sigma = max(p * sigma_scale, 1e-8)
        axes.append(np.exp(-0.5 * (x / sigma) ** 2))
    gauss = axes[0]
    for a in axes[1:]:
        gauss = np.multiply.outer(gauss, a)
    return gauss / gauss.max()


def gaussian_importance(
    patch_size: Sequence[int],
    sigma_scale: float = SIGMA_SCALE,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Gaussian weight map of `patch_size` centred on the patch (sigma = patch * sigma_scale per axis), maximum 1.

    Values that underflow to 0 in `dtype` are replaced by the smallest non-zero value, so every voxel gets weight.
    """
    gauss = torch.as_tensor(_gaussian_np(tuple(int(p) for p in patch_size), float(sigma_scale)), dtype=dtype)
    if (gauss == 0).any():
        gauss[gauss == 0] = gauss[gauss > 0].min()
    return gauss.to(device) if device is not None else gauss


@lru_cache(maxsize=16)
def _nnunet_gaussian_np(patch_size: tuple[int, ...]) -> np.ndarray:
    impulse = np.zeros(patch_size)
    impulse[tuple(p // 2 for p in patch_size)] = 1.0
    gauss = ndimage.gaussian_filter(impulse, [p / 8 for p in patch_size], 0, mode="constant", cval=0)
    return gauss / (gauss.max() / NNUNET_GAUSSIAN_SCALE)


def nnunet_gaussian(patch_size: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """nnU-Net v2's tile weight, float16 as it uses it: a unit impulse at the voxel ``p // 2`` of each axis smoothed
    by a truncated Gaussian filter (sigma = patch / 8, zero outside), scaled to a maximum of 10; zeros replaced by
    the smallest non-zero value."""
    gauss = torch.from_numpy(_nnunet_gaussian_np(tuple(int(p) for p in patch_size))).to(torch.float16)
    if (gauss == 0).any():
        gauss[gauss == 0] = gauss[gauss != 0].min()
    return gauss.to(device) if device is not None else gauss


def mirror_subsets(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """All subsets of `mirror_axes`, the empty one (no flip) first: 2**len(mirror_axes) passes."""
    axes = tuple(sorted(set(int(a) for a in mirror_axes)))
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def _first(output) -> torch.Tensor:
    return output[0] if isinstance(output, (list, tuple)) else output


NNUNET_NUMERICS = "nnunet"  # use_gaussian value: nnU-Net v2's Gaussian and float16 accumulation (its models)
NNUNET_GAUSSIAN_SCALE = 10.0
CPU_BATCH_VOXELS = 2**20  # inputs x patch voxels per forward pass on the CPU (~128 MB per 32-channel feature map)
CPU_MAX_BATCH = 8


def default_max_batch(device: torch.device | str, batch_tiles: int, patch_size: Sequence[int] = ()) -> int:
    """Largest forward batch (tiles x mirrored copies) by default.

    On the CPU: up to 8 inputs, fewer for large patches (at most `CPU_BATCH_VOXELS` input voxels per pass). A batch
    of 8 patch-sized inputs runs markedly faster per input than one at a time (bigger matrices for the convolutions;
    measured in docs/benchmarks.md "Inference"), so the mirrored copies of a tile share a pass. On a GPU the peak
    memory of a pass stays what `batch_tiles` asks for.
    """
    if torch.device(device).type != "cpu":
        return max(int(batch_tiles), 1)
    voxels = math.prod(int(p) for p in patch_size) if len(patch_size) else 1
    return max(1, min(CPU_MAX_BATCH, CPU_BATCH_VOXELS // max(voxels, 1)))


def _flip_groups(n_tiles: int, flips: list[tuple[int, ...]], max_batch: int) -> list[list[tuple[int, ...]]]:
    """Mirror subsets split into groups whose copies of `n_tiles` tiles fit one forward pass of `max_batch`."""
    per_pass = max(max_batch // max(n_tiles, 1), 1)
    return [flips[i : i + per_pass] for i in range(0, len(flips), per_pass)]


def _forward_tta(
    model: nn.Module, batch: torch.Tensor, flips: list[tuple[int, ...]], autocast: bool, max_batch: int = 1
) -> torch.Tensor:
    """Sum over mirror passes of the model's logits for a batch (B, C, *patch) -> (B, K, *patch) float32.

    The flipped copies are concatenated along the batch axis, at most `max_batch` inputs per forward pass; every
    output is flipped back before it is added. The caller divides by ``len(flips)`` (folded into the tile weight).
    """
    n = batch.shape[0]
    total = None
    for group in _flip_groups(n, flips, max_batch):
        dims = [[a + 2 for a in axes] for axes in group]
        inputs = [torch.flip(batch, d) if d else batch for d in dims]
        x = torch.cat(inputs) if len(inputs) > 1 else inputs[0]
        with torch.autocast("cuda", enabled=autocast):
            out = _first(model(x)).float()
        for i, d in enumerate(dims):
            part = out[i * n : (i + 1) * n]
            if total is None:  # a flip is already a fresh copy; the unflipped output may be a view of the batch
                total = torch.flip(part, d) if d else part.clone()
            else:
                total.add_(torch.flip(part, d) if d else part)
    return total


def _tiles(lead_shape: Sequence[int], positions: list[list[int]], patch: Sequence[int]) -> Iterator[Slicer]:
    """Slicers (*lead indices, *spatial slices) of every tile, leading (slice) axes outermost."""
    lead = itertools.product(*(range(n) for n in lead_shape))
    for idx in lead:
        for starts in itertools.product(*positions):
            yield (*idx, *(slice(s, s + p) for s, p in zip(starts, patch)))


def _pad_to_patch(image: torch.Tensor, patch: Sequence[int]) -> tuple[torch.Tensor, Slicer]:
    """Pad the trailing len(patch) axes to at least the patch (constant 0, centred); returns the crop-back slicer."""
    spatial = image.shape[-len(patch) :]
    before = [max(p - s, 0) // 2 for s, p in zip(spatial, patch)]
    after = [max(p - s, 0) - b for s, p, b in zip(spatial, patch, before)]
    crop = tuple(slice(b, b + s) for b, s in zip(before, spatial))
    if not any(before) and not any(after):
        return image, crop
    pads = [v for b, a in zip(reversed(before), reversed(after)) for v in (b, a)]
    return F.pad(image, pads, mode="constant", value=0.0), crop


def _accumulate(
    model: nn.Module,
    image: torch.Tensor,
    patch: tuple[int, ...],
    step: float,
    flips: list[tuple[int, ...]],
    batch_tiles: int,
    device: torch.device,
    buffer_device: torch.device,
    use_gaussian: bool | str,
    max_batch: int = 1,
) -> torch.Tensor:
    """Weighted logit sum divided by the weight sum for a padded image (C, *lead, *spatial) -> (K, *lead, *spatial).

    The buffers are created outside inference mode (so the result is a normal tensor); only the forward passes run
    under ``torch.inference_mode``. The mirror average is folded into the tile weight (one multiply per tile batch).
    """
    spatial = tuple(image.shape[-len(patch) :])
    lead = tuple(image.shape[1 : image.ndim - len(patch)])
    positions = tile_positions(spatial, patch, step)
    half = use_gaussian == NNUNET_NUMERICS  # nnU-Net's float16 weight and sums (models from nnU-Net)
    if half:
        weight = nnunet_gaussian(patch, device=buffer_device)
    elif use_gaussian:
        weight = gaussian_importance(patch, device=buffer_device)
    else:
        weight = torch.ones(patch, dtype=torch.float32, device=buffer_device)
    tile_weight = weight / len(flips)
    autocast = device.type == "cuda"
    dtype = torch.float16 if half else torch.float32
    logits, weights = None, torch.zeros((*lead, *spatial), dtype=dtype, device=buffer_device)
    tiles = list(_tiles(lead, positions, patch))
    for start in range(0, len(tiles), batch_tiles):
        chunk = tiles[start : start + batch_tiles]
        batch = torch.stack([image[(slice(None), *sl)] for sl in chunk]).to(device, non_blocking=True)
        with torch.inference_mode():
            pred = _forward_tta(model, batch, flips, autocast, max_batch)
            if half:  # mirror mean, then the weight, in float32; the sums round to float16 (nnU-Net's order)
                pred = pred.to(buffer_device).div_(len(flips)).mul_(weight)
            else:
                pred = pred.to(buffer_device).mul_(tile_weight)
        if logits is None:
            logits = torch.zeros((pred.shape[1], *lead, *spatial), dtype=dtype, device=buffer_device)
        for i, sl in enumerate(chunk):
            logits[(slice(None), *sl)].add_(pred[i])
            weights[sl].add_(weight)
    return logits.div_(weights).float() if half else logits.div_(weights)


def sliding_window_logits(
    model: nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    step: float = 0.5,
    mirror_axes: Sequence[int] = (),
    batch_tiles: int = 4,
    device: torch.device | str | None = None,
    use_gaussian: bool | str = True,
    max_batch: int | None = None,
) -> torch.Tensor:
    """Logits (K, *spatial) float32 on the CPU of `model` over `image` (C, *spatial) by Gaussian-weighted tiles.

    `patch_size` has one value per spatial axis (2 for 2D models, 3 for 3D). An image of one more axis than the
    patch, (C, Z, Y, X) with a 2D patch, is predicted slice by slice along Z (see `predict_2d_from_3d`).
    `mirror_axes` index the model's spatial axes (0 = first spatial axis); all their subsets are averaged.
    `device` defaults to the device of the model's parameters; the model is moved there if it differs.
    Up to `batch_tiles` tiles are cut out together, and fewer where their mirrored copies would not fit one forward
    pass of `max_batch` inputs (default `default_max_batch`: up to 8 on the CPU, fewer for large patches;
    `batch_tiles` on a GPU); the copies are concatenated into passes of at most `max_batch` inputs.
    Images smaller than the patch are padded with 0 and the result cropped back to the input size.
    `use_gaussian` "nnunet" (`NNUNET_NUMERICS`) reproduces nnU-Net v2's numbers for its models: its float16 Gaussian
    (`nnunet_gaussian`) and float16 sums of the weighted tiles and weights, as nnU-Net 2.x accumulates (on the CPU
    too); the result is returned as float32.
    The model runs in eval mode (its previous mode is restored) under ``torch.inference_mode``; a model returning
    a list (deep supervision) contributes its first, full-resolution element.
    """
    patch = tuple(int(p) for p in patch_size)
    if image.ndim not in (len(patch) + 1, len(patch) + 2) or (image.ndim == len(patch) + 2 and len(patch) != 2):
        raise ValueError(f"image of shape {tuple(image.shape)} does not fit a {len(patch)}D patch {patch}")
    if any(a < 0 or a >= len(patch) for a in mirror_axes):
        raise ValueError(f"mirror axes {tuple(mirror_axes)} out of range for a {len(patch)}D patch")
    device = _resolve_device(model, device)
    flips = mirror_subsets(mirror_axes)
    padded, crop = _pad_to_patch(image.float(), patch)
    lead = (slice(None),) * (image.ndim - len(patch))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            tiles = max(int(batch_tiles), 1)
            bound = max(int(max_batch), 1) if max_batch is not None else default_max_batch(device, tiles, patch)
            tiles = min(tiles, max(bound // len(flips), 1))  # a pass never holds more than `bound` inputs
            result = _run_with_fallback(model, padded, patch, step, flips, tiles, device, use_gaussian, bound)
            return result[(*lead, *crop)].cpu().contiguous()
    finally:
        model.train(was_training)


def predict_2d_from_3d(
    model: nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    step: float = 0.5,
    mirror_axes: Sequence[int] = (),
    batch_tiles: int = 16,
    device: torch.device | str | None = None,
    use_gaussian: bool | str = True,
    max_batch: int | None = None,
) -> torch.Tensor:
    """A 2D model over a 3D image (C, Z, Y, X), slice by slice along Z -> logits (K, Z, Y, X) float32 on the CPU.

    Tiles of several slices share a forward pass (`batch_tiles`); `mirror_axes` index (Y, X) as 0 and 1.
    """
    if len(patch_size) != 2 or image.ndim != 4:
        raise ValueError(
            f"predict_2d_from_3d needs a (C, Z, Y, X) image and a 2D patch, got {tuple(image.shape)} "
            f"and {tuple(patch_size)}"
        )
    return sliding_window_logits(
        model, image, patch_size, step, mirror_axes, batch_tiles, device, use_gaussian, max_batch
    )


def _resolve_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    param = next(model.parameters(), None)
    current = param.device if param is not None else torch.device("cpu")
    target = torch.device(device) if device is not None else current
    if target != current and param is not None:
        model.to(target)
    return target


def _run_with_fallback(
    model, padded, patch, step, flips, batch_tiles, device, use_gaussian, max_batch: int = 1
) -> torch.Tensor:
    """Accumulate on the device; on CUDA out-of-memory retry with host-memory accumulators, one input per pass."""
    args = (model, padded, patch, step, flips)
    if device.type != "cuda":
        return _accumulate(*args, batch_tiles, device, device, use_gaussian, max_batch=max_batch)
    try:
        return _accumulate(*args, batch_tiles, device, device, use_gaussian, max_batch=max_batch)
    except torch.cuda.OutOfMemoryError:
        logger.warning(f"GPU out of memory for an image of shape {tuple(padded.shape)}; accumulating in host memory")
    torch.cuda.empty_cache()
    return _accumulate(*args, 1, device, torch.device("cpu"), use_gaussian, max_batch=1)
