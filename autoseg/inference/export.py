"""The inverse of preprocessing, for export: preprocessed grid -> raw image grid.

Order (reverse of preprocessing): resample back to the cropped shape (same separate-z rule, with the current and
target spacings swapped), put the crop back into the full image (outside the crop box: background), undo the
transpose. Probabilities are resampled one class at a time into a preallocated float32 result, so the peak memory is
the result plus one class channel of the cropped grid.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import write_label
from autoseg.planning.plans import Configuration
from autoseg.preprocessing.resample import resample_data, resample_labels, separate_z_axis
from autoseg.preprocessing.storage import CaseProperties
from autoseg.resources import usable_cores

# what the network half of a prediction hands to the export half: (softmax probabilities (K, *preprocessed shape)
# float32, the case's CaseProperties, the configuration); `restore_probabilities(*output)` brings it to the raw grid
NetworkOutput = tuple[np.ndarray, CaseProperties, Configuration]


def _inverse(transpose: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(transpose)
    for i, a in enumerate(transpose):
        inv[a] = i
    return tuple(inv)


def _box(props: CaseProperties) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in props.bbox)


def _back_axis(props: CaseProperties, configuration: Configuration) -> int | None:
    rs = configuration.resampling
    return separate_z_axis(props.target_spacing, props.spacing, rs.anisotropy_threshold)


def _check(shape: tuple[int, ...], props: CaseProperties) -> None:
    if tuple(shape) != tuple(props.shape_after_resample):
        raise ValueError(
            f"case {props.case_id}: prediction shape {tuple(shape)} differs from the preprocessed shape "
            f"{tuple(props.shape_after_resample)}"
        )


def restore_probabilities(probs: np.ndarray, props: CaseProperties, configuration: Configuration) -> np.ndarray:
    """Class probabilities (K, *preprocessed shape, transposed) -> (K, *raw shape (z, y, x)) float32.

    Voxels outside the crop box get probability 1 for class 0 (background) and 0 for the others.
    """
    probs = np.asarray(probs)
    _check(probs.shape[1:], props)
    axis = _back_axis(props, configuration)
    inv = _inverse(props.transpose)
    out = np.zeros((probs.shape[0], *props.shape_before_crop), dtype=np.float32)
    out[0] = 1.0
    box = _box(props)
    cropped = np.empty((1, *props.shape_after_crop), dtype=np.float32)
    order = configuration.resampling.order_probabilities
    log_space = _log_space(configuration)
    for k in range(probs.shape[0]):
        channel = _log(probs[k : k + 1]) if log_space else probs[k : k + 1]
        resample_data(channel, props.shape_after_crop, axis, order, configuration.resampling.order_z, cropped)
        out[k][box] = cropped[0].transpose(inv)
    if log_space:
        _softmax_in_place(out, box)
    return out


# ---- log-space export (models from nnU-Net, which resamples logits) -------------------------------------------
LOG_FLOOR = float(np.finfo(np.float32).tiny)  # log(0) would be -inf, and 0 * -inf NaN in the interpolation


def _log_space(configuration: Configuration) -> bool:
    """Whether the configuration's export resamples log-probabilities (a configuration read from nnU-Net plans:
    nnU-Net resamples logits; log p_k = logit_k - logsumexp shifts every class of a voxel by the same amount, and
    interpolation weights are shared by the classes, so the argmax and the softmax afterwards are nnU-Net's)."""
    return bool(getattr(configuration, "log_space_export", False))


def _log(channel: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(channel, np.float32(LOG_FLOOR)), dtype=np.float32)


def _softmax_in_place(out: np.ndarray, box: tuple[slice, ...]) -> None:
    """Softmax over the class axis of `out` inside `box`, one slice of the first spatial axis at a time."""
    for z in range(box[0].start or 0, box[0].stop if box[0].stop is not None else out.shape[1]):
        view = out[(slice(None), z, *box[1:])]
        view -= view.max(axis=0, keepdims=True)
        np.exp(view, out=view)
        view /= view.sum(axis=0, keepdims=True)


def restore_labels(labels: np.ndarray, props: CaseProperties, configuration: Configuration) -> np.ndarray:
    """Label map ((1,) *preprocessed shape, transposed) -> (*raw shape (z, y, x)); -1 and outside the box -> 0."""
    labels = np.asarray(labels)
    if labels.ndim == len(props.shape_after_resample) + 1:
        labels = labels[0]
    _check(labels.shape, props)
    rs = configuration.resampling
    back = resample_labels(labels, props.shape_after_crop, _back_axis(props, configuration), rs.order_seg, rs.order_z)
    dtype = np.uint8 if back.max(initial=0) < 256 else np.uint16
    out = np.zeros(props.shape_before_crop, dtype=dtype)
    out[_box(props)] = np.maximum(back, 0).transpose(_inverse(props.transpose))
    return out


def write_segmentation(path: str | os.PathLike, labels: np.ndarray, geometry: Geometry):
    """Write a raw-grid label map (z, y, x) with the case's original geometry (atomically)."""
    return write_label(path, labels, geometry)


def restore_class(
    probs: np.ndarray, props: CaseProperties, configuration: Configuration, k: int, cropped: np.ndarray | None = None
) -> np.ndarray:
    """Class `k` of `restore_probabilities(probs, props, configuration)` alone: (*raw shape) float32, the same
    numbers (for a log-space configuration: the resampled log-probabilities, before the softmax, which is all an
    argmax needs); `cropped` is optional scratch of shape (1, *props.shape_after_crop)."""
    _check(np.asarray(probs).shape[1:], props)
    if cropped is None:
        cropped = np.empty((1, *props.shape_after_crop), dtype=np.float32)
    rs = configuration.resampling
    axis = _back_axis(props, configuration)
    channel = _log(probs[k : k + 1]) if _log_space(configuration) else probs[k : k + 1]
    resample_data(channel, props.shape_after_crop, axis, rs.order_probabilities, rs.order_z, cropped)
    outside = (0.0 if k == 0 else -np.inf) if _log_space(configuration) else (1.0 if k == 0 else 0.0)
    out = np.full(props.shape_before_crop, outside, dtype=np.float32)
    out[_box(props)] = cropped[0].transpose(_inverse(props.transpose))
    return out


def restored_argmax(members: Sequence[NetworkOutput], threads: int | None = None) -> np.ndarray:
    """The argmax over classes of the members' averaged raw-grid probabilities, one class at a time: the same
    labels as ``probabilities_to_labels(mean of restore_probabilities(*member))`` (ties go to the lower label)
    without the (K, *raw shape) array, so the peak is a few raw-grid volumes whatever the number of classes
    (105 classes of a 512 x 512 x 300 CT: ~1.5 GB instead of 33 GB). An ensemble with a log-space member (nnU-Net
    models) averages full softmax probabilities instead. Classes are restored by `threads` threads (default: the
    usable cores), each holding one more raw-grid volume; the labels do not depend on the number."""
    n_classes = members[0][0].shape[0]
    if len(members) > 1 and any(_log_space(m[2]) for m in members):  # averaging needs each member's softmax
        total = restore_probabilities(*members[0])
        for member in members[1:]:
            total += restore_probabilities(*member)
        total /= len(members)
        return np.argmax(total, axis=0).astype(np.uint8 if n_classes <= 256 else np.uint16)

    def restored(k: int) -> np.ndarray:
        value = None
        for member in members:  # summed in member order, as the exporter sums whole arrays
            one = restore_class(*member, k)
            value = one if value is None else np.add(value, one, out=value)
        return value / len(members) if len(members) > 1 else value

    labels = best = None
    for k, value in _in_order(restored, n_classes, threads or usable_cores()):
        if best is None:
            best, labels = value, np.zeros(value.shape, dtype=np.uint8 if n_classes <= 256 else np.uint16)
            continue
        higher = value > best
        labels[higher] = k
        np.maximum(best, value, out=best)
    return labels


def _in_order(fn, n: int, threads: int):
    """(k, fn(k)) for k = 0 .. n-1 in order, computed by up to `threads` threads with at most `threads` results
    waiting (numpy's resampling releases the GIL, so classes restore in parallel while the peak stays bounded)."""
    if threads <= 1 or n <= 1:
        yield from ((k, fn(k)) for k in range(n))
        return
    with ThreadPoolExecutor(threads) as pool:
        pending = deque(pool.submit(fn, k) for k in range(min(threads, n)))
        for k in range(n):
            value = pending.popleft().result()
            if k + threads < n:
                pending.append(pool.submit(fn, k + threads))
            yield k, value
