"""DatasetFingerprint: per-case geometry and label volumes, per-channel foreground intensity statistics.

All shapes and spacings are in array order (z, y, x), as in nnU-Net's ``dataset_fingerprint.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoseg.data.labels import LabelScheme, label_scheme
from autoseg.errors import FingerprintError
from autoseg.serialization import from_json, load_json, save_json, to_json

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class IntensityStats:
    mean: float
    median: float
    std: float
    min: float
    max: float
    percentile_00_5: float
    percentile_99_5: float


@dataclass(frozen=True)
class CaseFingerprint:
    case_id: str
    spacing: tuple[float, ...]  # (z, y, x) mm
    shape_after_crop: tuple[int, ...]  # (z, y, x) voxels, after crop to the nonzero region
    shape_before_crop: tuple[int, ...] | None = None  # None where unknown (fingerprints modeled on published data)
    label_voxels: dict[str, int] | None = None  # label value (as string) -> voxel count
    label_volumes_ml: dict[str, float] | None = None


@dataclass(frozen=True)
class DatasetFingerprint:
    schema_version: int
    dataset: str
    channel_names: tuple[str, ...]
    labels: dict[str, int | list[int]]  # dataset.json's labels (a list of values for a region)
    num_training: int
    file_ending: str
    cases: tuple[CaseFingerprint, ...]
    intensity: tuple[IntensityStats, ...]  # one per channel, over sampled foreground voxels
    median_relative_size_after_cropping: float
    source: str = "computed by autoseg fingerprint"  # where the numbers come from
    intensity_samples_per_case: int | None = None  # foreground draws per case and channel (None: unknown)
    seed: int | None = None  # global sampling seed of `autoseg fingerprint` (None: not computed by autoseg)
    regions_class_order: tuple[int, ...] | None = None  # datasets with regions (autoseg.data.labels)

    @property
    def scheme(self) -> LabelScheme:
        """What the labels mean (classes or regions, ignore label)."""
        return label_scheme(self.labels, self.regions_class_order, f"fingerprint of {self.dataset}")

    @property
    def spacings(self) -> np.ndarray:
        return np.array([c.spacing for c in self.cases], dtype=float)

    @property
    def shapes_after_crop(self) -> np.ndarray:
        return np.array([c.shape_after_crop for c in self.cases], dtype=float)

    @property
    def median_spacing(self) -> np.ndarray:
        """Per-axis median spacing (z, y, x) over the cases."""
        return np.median(self.spacings, axis=0)

    @property
    def median_shape_after_crop(self) -> np.ndarray:
        """Per-axis median shape after cropping (z, y, x) over the cases."""
        return np.median(self.shapes_after_crop, axis=0)

    @property
    def is_2d(self) -> bool:
        return bool(np.median(self.shapes_after_crop[:, 0]) == 1)

    def save(self, path: str | Path) -> Path:
        return save_json(path, self.to_json())

    def to_json(self) -> dict:
        """JSON data; `regions_class_order` only where the dataset has regions (older files stay byte-identical)."""
        data = to_json(self)
        if data.get("regions_class_order") is None:
            data.pop("regions_class_order", None)
        return data

    @classmethod
    def load(cls, path: str | Path) -> DatasetFingerprint:
        try:
            data = load_json(path)
            fp = from_json(cls, data)
        except ValueError as exc:
            raise FingerprintError(f"{path}: invalid fingerprint: {exc}") from exc
        if fp.schema_version != SCHEMA_VERSION:
            raise FingerprintError(
                f"{path}: fingerprint schema_version {fp.schema_version}, this autoseg reads {SCHEMA_VERSION}; "
                "re-run `autoseg fingerprint -d N`"
            )
        return fp
