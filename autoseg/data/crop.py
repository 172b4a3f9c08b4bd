"""Crop to the nonzero region: the mask of voxels where any channel is nonzero (holes filled) and its bounding box.

Shared by fingerprinting and preprocessing so that both crop identically (nnU-Net's rule).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_fill_holes


def nonzero_mask(image: np.ndarray) -> np.ndarray:
    """Boolean mask (Z, Y, X) of voxels where any channel of `image` (C, Z, Y, X) is nonzero, holes filled."""
    mask = np.any(np.asarray(image) != 0, axis=0)
    return binary_fill_holes(mask)


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Per axis (lo, hi) with hi exclusive, enclosing all True voxels; the full extent if `mask` is empty."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other)) if other else np.flatnonzero(mask)
        box.append((int(hits[0]), int(hits[-1]) + 1) if hits.size else (0, int(mask.shape[axis])))
    return tuple(box)


def crop_to_nonzero(
    image: np.ndarray, seg: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]:
    """Crop `image` (C, Z, Y, X) and `seg` (Z, Y, X) to the bounding box of the nonzero mask.

    Returns (cropped image, cropped seg, box). In the returned seg, voxels outside the nonzero mask that are
    background (0) become -1 ("outside the body"). Without `seg` (test images) the seg is the mask itself as
    0 (inside) / -1 (outside), int8. The cropped arrays are views/copies of the box only, never the full volume.
    """
    mask = nonzero_mask(image)
    box = bounding_box(mask)
    crop = tuple(slice(lo, hi) for lo, hi in box)
    inside = mask[crop]
    if seg is None:
        out = np.where(inside, 0, -1).astype(np.int8)
    else:
        seg = np.asarray(seg)[crop]
        dtype = np.int8 if seg.size == 0 or (seg.max() <= 127 and seg.min() >= -1) else np.int16
        out = seg.astype(dtype, copy=True)
        out[(out == 0) & ~inside] = -1
    return image[(slice(None), *crop)], out, box
