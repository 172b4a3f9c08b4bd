"""Resampling of images, label maps and probabilities between spacings (nnunet-rules.md d.5).

- Images: B-spline of order `order` (3) with half-voxel-centred coordinates and edge extension, clipped to the input
  range: the same numbers as skimage's ``resize(mode="edge", anti_aliasing=False)`` that nnU-Net uses (to ~1e-6).
- Label maps: every label as a one-hot float32 volume, linear (order 1), label with the highest weight wins
  (ties: the higher label value, as nnU-Net's ordered 0.5 threshold).
- Probabilities (export): each class channel with order 1.
- Separate z (`separate_z_axis`): when one axis is more than `threshold` times coarser than the finest, the other
  axes are resampled with `order` and that axis with `order_z` (0 = nearest neighbour).
- A shape that does not change is returned as is (identity); an axis whose size does not change is not touched.

Speed: a tensor-product spline is separable, so each axis is resampled on its own with one dense matrix product
(`axis_operator`, the 1D spline operator including its prefilter, built once per size pair with scipy). This is
exact (same result as the N-d spline) and several times faster than ``scipy.ndimage.zoom`` on 3D volumes.
Memory: one channel at a time in float32 (a few copies of the larger grid of that channel at most).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import ndimage


def compute_new_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """round(spacing / target * shape) per axis (at least 1)."""
    return tuple(max(1, int(round(s * sp / t))) for s, sp, t in zip(shape, spacing, target))


def _coarse_axis(spacing: Sequence[float], threshold: float) -> tuple[bool, int | None]:
    """(anisotropic?, the unique coarsest axis or None when two or more axes share the largest spacing)."""
    sp = np.asarray(spacing, dtype=float)
    if not sp.max() / sp.min() > threshold:
        return False, None
    coarsest = np.flatnonzero(sp == sp.max())
    return True, int(coarsest[0]) if coarsest.size == 1 else None


def separate_z_axis(current: Sequence[float], target: Sequence[float], threshold: float = 3.0) -> int | None:
    """Axis to resample separately (nnU-Net's rule), or None for a joint resampling.

    The current spacing decides first: if max/min > threshold, its coarsest axis; otherwise the target spacing is
    checked the same way. When the deciding spacing has a tie for the largest value, there is no separate axis.
    """
    aniso, axis = _coarse_axis(current, threshold)
    if aniso:
        return axis
    return _coarse_axis(target, threshold)[1]


@lru_cache(maxsize=512)
def axis_operator(n_in: int, n_out: int, order: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix resampling a 1D signal with a B-spline of `order` (prefilter included).

    Built by resampling the identity with scipy (half-voxel-centred grid, edge mode), so applying it along each
    axis in turn equals scipy's (and skimage's) N-d spline resize: the N-d spline is the tensor product of 1D ones.
    """
    eye = np.eye(n_in)
    op = ndimage.zoom(eye, (n_out / n_in, 1), order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    return op.astype(np.float32)


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output position along one axis for nearest-neighbour resampling."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def _along(x: np.ndarray, axis: int, n_out: int, order: int) -> np.ndarray:
    """Resample `x` along one axis to `n_out` samples (one BLAS matrix product, or an index take for order 0)."""
    n_in = x.shape[axis]
    if n_in == n_out:
        return x
    if order == 0:
        return np.take(x, nearest_index(n_in, n_out), axis=axis)
    op = axis_operator(n_in, n_out, order)
    if axis == x.ndim - 1:
        return (x.reshape(-1, n_in) @ op.T).reshape(*x.shape[:-1], n_out)
    return np.ascontiguousarray(np.moveaxis(np.tensordot(op, x, axes=([1], [axis])), 0, axis))


def _resample_channel(
    x: np.ndarray, shape: tuple[int, ...], axis: int | None, order: int, order_z: int, out: np.ndarray
) -> None:
    """Resample one spatial volume `x` to `shape` into `out` (float32); `axis` (if any) last, with `order_z`.

    The other axes go one at a time, shrinking ones first (cheapest). Spline results (order > 1) are clipped to the
    input's value range as skimage's resize does: of the whole volume, or of each slice when `axis` is separate.
    """
    y = np.asarray(x, dtype=np.float32)
    others = sorted((a for a in range(y.ndim) if a != axis), key=lambda a: shape[a] / y.shape[a])
    for a in others:
        y = _along(y, a, shape[a], order)
    if order > 1 and x.size:
        reduce = tuple(a for a in range(x.ndim) if a != axis)
        y = np.clip(y, x.min(axis=reduce, keepdims=True), x.max(axis=reduce, keepdims=True))
    if axis is not None:
        y = _along(y, axis, shape[axis], order_z)
    out[...] = y


def resample_data(
    data: np.ndarray,
    shape: Sequence[int],
    axis: int | None = None,
    order: int = 3,
    order_z: int = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Resample `data` (C, *spatial) to (C, *shape) float32, channel by channel. Same shape: returned unchanged."""
    shape = tuple(int(s) for s in shape)
    if tuple(data.shape[1:]) == shape and out is None:
        return data if data.dtype == np.float32 else data.astype(np.float32)
    if out is None:
        out = np.empty((data.shape[0], *shape), dtype=np.float32)
    for c in range(data.shape[0]):
        src = np.asarray(data[c], dtype=np.float32)
        _resample_channel(src, shape, axis, order, order_z, out[c])
    return out


def resample_labels(
    seg: np.ndarray, shape: Sequence[int], axis: int | None = None, order: int = 1, order_z: int = 0
) -> np.ndarray:
    """Resample a label map (*spatial) to `shape` by one-hot interpolation; returns the same dtype."""
    shape = tuple(int(s) for s in shape)
    if tuple(seg.shape) == shape:
        return seg
    labels = np.unique(seg)
    nearest_z = axis is not None and order_z == 0 and seg.shape[axis] != shape[axis]
    inner = tuple(seg.shape[axis] if nearest_z and i == axis else s for i, s in enumerate(shape))
    best = np.full(inner, -np.inf, dtype=np.float32)
    out = np.full(inner, labels[0], dtype=seg.dtype)
    weight = np.empty(inner, dtype=np.float32)
    for value in labels:
        onehot = (seg == value).astype(np.float32)
        _resample_channel(onehot, inner, axis, order, order_z, weight)
        win = weight >= best
        out[win] = value
        np.maximum(best, weight, out=best)
    if nearest_z:
        out = np.take(out, nearest_index(seg.shape[axis], shape[axis]), axis=axis)
    return out


def resample_probabilities(
    probs: np.ndarray, shape: Sequence[int], axis: int | None = None, order: int = 1, order_z: int = 0, out=None
) -> np.ndarray:
    """Resample class probabilities/logits (K, *spatial) to (K, *shape) float32, one class at a time."""
    return resample_data(probs, shape, axis, order, order_z, out)
