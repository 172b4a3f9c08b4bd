"""Per-case, per-label statistics of a segmentation: size in physical units and mean image intensity per channel.

One row per (case, foreground label), also for labels absent from the case (size 0, mean intensity empty), so that
tables of several cases line up. 3D images give ``volume_ml`` (voxels x voxel volume in mm^3 / 1000); 2D images
(geometry.dim == 2, whose first spacing is the 999 placeholder) give ``area_mm2`` instead and leave ``volume_ml``
empty. Used by ``autoseg predict --statistics`` (rows of every predicted case written with `write_statistics_csv`;
cases predicted by an earlier run are read back with `statistics_from_files`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_file, read_image
from autoseg.errors import DatasetError
from autoseg.serialization import atomic_write_text

COLUMNS = ("case", "label", "label_name", "voxels", "volume_ml", "area_mm2")


def _names_by_value(label_names: Mapping) -> dict[int, str]:
    """Accept dataset.json's {name: value} (or {value: name}); background (0) is dropped."""
    out: dict[int, str] = {}
    for key, value in label_names.items():
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            out[int(value)] = str(key)
        else:
            out[int(key)] = str(value)
    return {v: out[v] for v in sorted(out) if v != 0}


def _channel_columns(n_channels: int, channel_names: Sequence[str] | None) -> list[str]:
    if channel_names is not None and len(channel_names) == n_channels:
        return [f"mean_intensity_{i}_{name}" for i, name in enumerate(channel_names)]
    return [f"mean_intensity_{i}" for i in range(n_channels)]


def case_statistics(
    labels: np.ndarray,
    image: np.ndarray | None,
    geometry: Geometry,
    label_names: Mapping,
    case_id: str = "",
    channel_names: Sequence[str] | None = None,
) -> list[dict]:
    """Rows of size and mean intensity per foreground label of one case.

    Args:
        labels: label map (Z, Y, X) (2D images: Z = 1) in the image grid.
        image: intensities (C, Z, Y, X) in the same grid, or None (no intensity columns).
        geometry: the image geometry; spacing (z, y, x) in mm.
        label_names: dataset.json's labels, {name: value} (background 0 is skipped).
        case_id: written in the `case` column. channel_names: names for the intensity columns.
    Returns:
        one dict per label with the keys of COLUMNS plus one ``mean_intensity_<c>[_<name>]`` key per channel.
    """
    labels = np.asarray(labels)
    if image is not None:
        image = np.asarray(image)
        if image.ndim != 4 or image.shape[1:] != labels.shape:
            raise ValueError(f"{case_id}: image shape {image.shape} does not match label shape {labels.shape}")
    sz, sy, sx = (float(s) for s in geometry.spacing)
    voxel_mm3 = sz * sy * sx
    columns = _channel_columns(image.shape[0], channel_names) if image is not None else []
    rows = []
    for value, name in _names_by_value(label_names).items():
        mask = labels == value
        n = int(mask.sum())
        row: dict = {"case": case_id, "label": value, "label_name": name, "voxels": n}
        row["volume_ml"] = None if geometry.is_2d else n * voxel_mm3 / 1000.0
        row["area_mm2"] = n * sy * sx if geometry.is_2d else None
        for c, col in enumerate(columns):
            row[col] = float(image[c][mask].mean(dtype=np.float64)) if n else math.nan
        rows.append(row)
    return rows


def write_statistics_csv(rows: Iterable[Mapping], path: str | Path) -> Path:
    """Write rows (from one or many `case_statistics` calls) as CSV, atomically; columns in a fixed order."""
    rows = list(rows)
    extra = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in COLUMNS]
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *extra])
    return atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g"))


def statistics_from_files(
    label_file: str | Path,
    image_files: Sequence[str | Path],
    label_names: Mapping,
    case_id: str = "",
    channel_names: Sequence[str] | None = None,
) -> list[dict]:
    """`case_statistics` of a written segmentation and its input channel files (a case predicted earlier).

    The geometry (voxel size) is the image's, as for a case just predicted; a segmentation whose grid differs from
    the image's raises DatasetError naming both files.
    """
    labels, _ = read_file(label_file)
    image, geometry = read_image(image_files, check_integrity=False)
    if labels.shape[1:] != image.shape[1:]:
        raise DatasetError(
            f"{label_file}: segmentation shape {labels.shape[1:]} differs from the image {image_files[0]} "
            f"{image.shape[1:]}; remove it and predict the case again"
        )
    return case_statistics(labels[0], image, geometry, label_names, case_id, channel_names)
