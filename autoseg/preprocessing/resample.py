"""Resampling of images, label maps and probabilities between spacings (docs/planning.md, rule 7).

- Images: B-spline of order `order` (3) with half-voxel-centred coordinates and edge extension, clipped to the input
  range: the same numbers as skimage's ``resize(mode="edge", anti_aliasing=False)`` that nnU-Net uses (to ~1e-6).
- Label maps: every label as a one-hot float32 volume, linear (order 1), label with the highest weight wins
  (ties: the higher label value, as nnU-Net's ordered 0.5 threshold).
- Probabilities (export): each class channel with order 1.
- Separate z (`separate_z_axis`): when one axis is more than `threshold` times coarser than the finest, the other
  axes are resampled with `order` and that axis with `order_z` (0 = nearest neighbour).
- A shape that does not change is returned as is (identity); an axis whose size does not change is not touched.

Speed: a tensor-product spline is separable, so each axis is resampled on its own: for order > 1 the axis is padded
by `SPLINE_PAD` edge samples and prefiltered into spline coefficients (`spline_coefficients`: the recursive B-spline
filter run over whole slabs, the numbers of scipy's ``spline_filter1d`` that ``scipy.ndimage.zoom`` uses), then every
output sample is the weighted sum of its `order` + 1 neighbouring coefficients (`axis_taps`, built once per size
pair); order 1 sums 2 samples of the signal itself. This is exact (same result as the N-d spline) and several times
faster than ``scipy.ndimage.zoom`` on 3D volumes.
Determinism: no BLAS (an earlier version used dense matrix products, whose summation order depends on the BLAS
thread count and CPU kernel, so `-j 1` and `-j 2` wrote files differing by ~1e-6) and no threads: every step is an
elementwise numpy operation in a fixed order, so the output is bit-identical whatever the number of threads or worker
processes (tests/unit/preprocessing/test_determinism.py).
Memory: one channel at a time in float32 (a few copies of the larger grid of that channel at most).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np


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


SPLINE_PAD = 12  # edge samples added before the spline prefilter (scipy's zoom does the same for mode="nearest")
SPLINE_POLES: dict[int, tuple[float, ...]] = {  # poles of the B-spline prefilter (the inverse of its sampled kernel)
    2: (math.sqrt(8.0) - 3.0,),
    3: (math.sqrt(3.0) - 2.0,),
    4: (
        math.sqrt(664.0 - math.sqrt(438976.0)) + math.sqrt(304.0) - 19.0,
        math.sqrt(664.0 + math.sqrt(438976.0)) - math.sqrt(304.0) - 19.0,
    ),
    5: (
        math.sqrt(67.5 - math.sqrt(4436.25)) + math.sqrt(26.25) - 6.5,
        math.sqrt(67.5 + math.sqrt(4436.25)) - math.sqrt(26.25) - 6.5,
    ),
}
INIT_TOLERANCE = 1e-12  # the causal filter's initial value sums the signal until |pole| ** k falls below this


def _bspline(x: np.ndarray, order: int) -> np.ndarray:
    """Centred cardinal B-spline of degree `order` at `x` (float64): the interpolation weight at distance `x`."""
    half = (order + 1) / 2
    out = np.zeros_like(x, dtype=np.float64)
    for k in range(order + 2):
        out += (-1) ** k * math.comb(order + 1, k) * np.maximum(x + half - k, 0.0) ** order
    return out / math.factorial(order)


def _check_order(order: int) -> None:
    if not 0 <= order <= max(SPLINE_POLES):
        raise ValueError(f"spline order {order} is not supported (0..{max(SPLINE_POLES)})")


@lru_cache(maxsize=512)
def axis_taps(n_in: int, n_out: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """(index, weight), both (order + 1, n_out): output sample j of a 1D B-spline resampling from `n_in` to `n_out`
    samples is ``sum_t weight[t, j] * c[index[t, j]]``, summed in the order t = 0, 1, ... (order >= 1).

    Half-voxel-centred grid (output j sits at input coordinate (j + 0.5) n_in / n_out - 0.5) with edge extension,
    as ``scipy.ndimage.zoom(order=order, mode="nearest", grid_mode=True)``. For order 1, `c` is the signal itself
    (indices clamped to it); for order > 1 it is the spline coefficients of the signal padded by `SPLINE_PAD` edge
    samples each side (`spline_coefficients`). Weights are float32, the arrays read-only (cached).
    """
    _check_order(order)
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    first = np.floor(pos - (order - 1) / 2).astype(np.int64)
    index = first[None, :] + np.arange(order + 1)[:, None]
    weight = _bspline(pos[None, :] - index, order).astype(np.float32)
    index = np.clip(index, 0, n_in - 1) if order == 1 else index + SPLINE_PAD
    index.setflags(write=False)
    weight.setflags(write=False)
    return index, weight


def _filter_pole(rows: list[np.ndarray], z: float, tmp: np.ndarray) -> None:
    """Apply the causal and anti-causal recursive filter of pole `z` in place to the samples `rows` (the slabs of
    the coefficient array along its first axis).

    Boundary: half-sample symmetric extension (as scipy's prefilter for mode "nearest"). Every step is one
    elementwise numpy operation on a whole slab, in a fixed order. `tmp` is scratch of the shape of one slab.
    """
    n = len(rows)
    zf = np.float32(z)
    # causal initial value: sum_k z^k x[-k] over the extension x[-1 - k] = x[k] (period 2n), truncated
    horizon = min(math.ceil(math.log(INIT_TOLERANCE) / math.log(abs(z))), 2 * n - 1)
    acc = rows[0].copy()
    zk = 1.0
    for k in range(1, horizon + 1):
        zk *= z
        np.multiply(rows[k - 1 if k <= n else 2 * n - k], np.float32(zk), out=tmp)
        acc += tmp
    np.divide(acc, np.float32(1.0 - z ** (2 * n)), out=rows[0])
    for prev, row in zip(rows[:-1], rows[1:]):  # c+[k] = x[k] + z c+[k - 1]
        np.multiply(prev, zf, out=tmp)
        np.add(row, tmp, out=row)
    rows[-1] *= np.float32(z / (z - 1.0))  # anti-causal initial value for the symmetric extension
    for k in range(n - 2, -1, -1):  # c[k] = z (c[k + 1] - c+[k])
        row = rows[k]
        np.subtract(rows[k + 1], row, out=row)
        np.multiply(row, zf, out=row)


def spline_coefficients(x: np.ndarray, axis: int, order: int) -> np.ndarray:
    """B-spline coefficients (float32) of `x` along `axis` after padding it by `SPLINE_PAD` edge samples each side.

    Returned with that axis FIRST (contiguous, shape (n + 2 SPLINE_PAD, *other axes)): the recursive prefilter runs
    over whole slabs, which are contiguous there. Equals ``scipy.ndimage.spline_filter1d`` of the padded signal with
    mode "nearest" (computed in float64 there) within float32 rounding, but with a fixed operation order.
    """
    _check_order(order)
    n = x.shape[axis]
    poles = SPLINE_POLES[order]
    gain = np.float32(math.prod((1.0 - z) * (1.0 - 1.0 / z) for z in poles))
    c = np.empty((n + 2 * SPLINE_PAD, *x.shape[:axis], *x.shape[axis + 1 :]), dtype=np.float32)
    np.multiply(np.moveaxis(x, axis, 0), gain, out=c[SPLINE_PAD : SPLINE_PAD + n])
    c[:SPLINE_PAD] = c[SPLINE_PAD]
    c[SPLINE_PAD + n :] = c[SPLINE_PAD + n - 1]
    rows = list(c)
    tmp = np.empty(c.shape[1:], dtype=np.float32)
    for z in poles:
        _filter_pole(rows, z, tmp)
    return c


def _tap_sum(src: np.ndarray, axis: int, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``sum_t weight[t] * take(src, index[t], axis)`` (float32), accumulated in the order t = 0, 1, ..."""
    n_out = index.shape[1]
    bcast = (n_out,) + (1,) * (src.ndim - axis - 1)  # weights broadcast along the axes after `axis`
    shape = src.shape[:axis] + (n_out,) + src.shape[axis + 1 :]
    out = np.empty(shape, dtype=np.float32)
    term = np.empty(shape, dtype=np.float32)
    np.take(src, index[0], axis=axis, out=out, mode="clip")  # indices are in range: "clip" avoids a buffer
    out *= weight[0].reshape(bcast)
    for t in range(1, index.shape[0]):
        np.take(src, index[t], axis=axis, out=term, mode="clip")
        term *= weight[t].reshape(bcast)
        out += term
    return out


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output position along one axis for nearest-neighbour resampling."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def _along(x: np.ndarray, axis: int, n_out: int, order: int) -> np.ndarray:
    """Resample `x` (float32) along one axis to `n_out` samples: an index take for order 0, else the fixed-order
    weighted sum of `axis_taps` (elementwise numpy, no BLAS: the same bits whatever the number of threads).
    The result may be a non-contiguous view (order > 1 works with the axis moved first)."""
    n_in = x.shape[axis]
    if n_in == n_out:
        return x
    if order == 0:
        return np.take(x, nearest_index(n_in, n_out), axis=axis)
    index, weight = axis_taps(n_in, n_out, order)
    if order == 1:
        return _tap_sum(x, axis, index, weight)
    return np.moveaxis(_tap_sum(spline_coefficients(x, axis, order), 0, index, weight), 0, axis)


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
