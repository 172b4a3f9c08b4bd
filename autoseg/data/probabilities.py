"""Class probabilities on disk, and the one rule that turns probabilities into labels (argmax, or for regions the
sigmoid probabilities through regions_class_order: `autoseg.data.labels`).

Probability files are ``<case>.npz`` with the key ``probabilities`` (float16, (K, Z, Y, X) in the raw image grid),
written by `autoseg predict --save-probabilities` and by the end-of-fold validation (the same writer), read by
ensembling and model selection.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autoseg.data.labels import LabelScheme, argmax_labels
from autoseg.errors import ImageIOError
from autoseg.serialization import atomic_write_bytes


def load_probabilities(path: str | Path) -> np.ndarray:
    """Probabilities (K, Z, Y, X) as float32 from a ``.npz`` file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageIOError(f"{path}: probability file not found (was the model run with probabilities saved?)")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "probabilities" not in data.files:
                raise ImageIOError(f"{path}: no 'probabilities' array in the file (found {data.files})")
            return data["probabilities"].astype(np.float32)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ImageIOError(f"{path}: not a readable .npz file ({exc})") from exc


def save_probabilities(path: str | Path, probs: np.ndarray) -> Path:
    """Write probabilities as float16 under the key ``probabilities`` (compressed, atomic)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, probabilities=np.asarray(probs).astype(np.float16))
    return atomic_write_bytes(path, buf.getvalue())


def average_probabilities(members: Sequence[np.ndarray]) -> np.ndarray:
    """Voxel-wise mean of equally shaped probability arrays (float32)."""
    if not members:
        raise ValueError("average_probabilities: no members given")
    total = np.zeros(np.shape(members[0]), dtype=np.float32)
    for i, m in enumerate(members):
        if np.shape(m) != total.shape:
            raise ValueError(f"ensemble member {i} has shape {np.shape(m)}, member 0 has {total.shape}")
        total += m
    return total / len(members)


def probabilities_to_labels(probs: np.ndarray, scheme: LabelScheme | None = None) -> np.ndarray:
    """Probabilities (K, *spatial) -> label map: the argmax over the class axis as uint8 (uint16 above 256 classes;
    ties go to the lower label), or for a `scheme` with regions the regions_class_order rule (`LabelScheme.to_labels`).
    """
    return argmax_labels(probs) if scheme is None else scheme.to_labels(probs)


def average_probability_files(paths: Sequence[str | Path]) -> np.ndarray:
    """Averaged probabilities of one case from several members' ``.npz`` files (one member in memory at a time)."""
    total = None
    for p in paths:
        probs = load_probabilities(p)
        if total is not None and probs.shape != total.shape:
            raise ImageIOError(f"{p}: probabilities of shape {probs.shape}, {paths[0]} has {total.shape}")
        total = probs if total is None else total + probs
    return total / len(paths)
