"""The inverse of preprocessing, for export: preprocessed grid -> raw image grid.

Order (reverse of preprocessing): resample back to the cropped shape (same separate-z rule, with the current and
target spacings swapped), put the crop back into the full image (outside the crop box: background), undo the
transpose. Probabilities are resampled one class at a time into a preallocated float32 result, so the peak memory is
the result plus one class channel of the cropped grid.
"""

from __future__ import annotations

import os

import numpy as np

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import write_label
from autoseg.planning.plans import Configuration
from autoseg.preprocessing.resample import resample_data, resample_labels, separate_z_axis
from autoseg.preprocessing.storage import CaseProperties

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
    for k in range(probs.shape[0]):
        resample_data(probs[k : k + 1], props.shape_after_crop, axis, order, configuration.resampling.order_z, cropped)
        out[k][box] = cropped[0].transpose(inv)
    return out


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
