"""A cascade stage's extra input: the previous stage's segmentation as one-hot channels in the stage's grid.

A cascade configuration (``previous_stage`` set, e.g. 3d_cascade_fullres after 3d_lowres) gets, besides the image,
one input channel per foreground label. For training and fold validation the map is the previous stage's
cross-validation prediction, stored by `autoseg.training.cascade` as ``<case>.npy`` in the configuration's grid; at
inference it is the previous stage's prediction of the input, brought into the grid by `convert_case`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autoseg.data.geometry import Geometry
from autoseg.fingerprint.fingerprint import DatasetFingerprint
from autoseg.planning.plans import Configuration, Plans
from autoseg.preprocessing.preprocess import preprocess_case
from autoseg.preprocessing.storage import PreprocessedCase


def one_hot(label_map: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """float32 (len(labels), *shape): channel i is 1 where `label_map` equals labels[i] (other values: all 0)."""
    label_map = np.asarray(label_map)
    out = np.empty((len(labels), *label_map.shape), dtype=np.float32)
    for i, v in enumerate(labels):
        np.equal(label_map, v, out=out[i], casting="unsafe")
    return out


def with_prev_stage(data: np.ndarray, folder: Path, case_id: str, labels: Sequence[int]) -> np.ndarray:
    """A preprocessed case's data (C, *shape) with its stored previous-stage map appended as one-hot channels."""
    return np.concatenate([data, one_hot(np.load(folder / f"{case_id}.npy"), labels)])


def convert_case(
    image: np.ndarray,
    prediction: np.ndarray,
    geometry: Geometry,
    plans: Plans,
    conf: Configuration,
    fingerprint: DatasetFingerprint | None = None,
    case_id: str = "case",
) -> tuple[PreprocessedCase, np.ndarray]:
    """Preprocess `image` with the raw-grid label map `prediction` as its label -> (PreprocessedCase, the label
    map in the configuration's grid: uint8/uint16, 0 outside the nonzero region)."""
    case = preprocess_case(image, prediction, geometry, plans, conf, fingerprint, case_id)
    seg = np.maximum(case.seg[0], 0)
    return case, seg.astype(np.uint8 if seg.max(initial=0) < 256 else np.uint16)
