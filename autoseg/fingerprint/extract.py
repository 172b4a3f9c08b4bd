"""Extract a DatasetFingerprint from a raw dataset (nnU-Net's fingerprint; the planner's use of it: docs/planning.md).

Per training case (one joblib/loky worker holds one case at a time): read channels and label, crop to the nonzero
region (any channel != 0, holes filled, bounding box), record spacing and shapes before/after the crop, voxel counts
and volumes (ml) per foreground label, and draw ``sample_budget // n_cases`` foreground intensities per channel
(label > 0 inside the crop) with replacement. Dataset level: per-channel statistics of the pooled samples and the
median relative size after cropping.

Determinism: case ``i`` (in sorted case-id order) draws from ``np.random.default_rng([seed, i])``, results are
reduced in case order in the parent process, so the output does not depend on ``jobs`` or worker scheduling.
Samples are held as (value, count) pairs, see `autoseg.fingerprint.intensity` for why and how exact that is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from autoseg.data.crop import bounding_box, nonzero_mask
from autoseg.data.dataset import Case, DatasetSpec, check_num_training, list_cases, load_dataset
from autoseg.data.geometry import PSEUDO_SPACING_2D
from autoseg.data.image_io import read_image, read_label
from autoseg.data.verify import loaded_case_problems
from autoseg.data.workers import workers_for_cases
from autoseg.errors import DatasetError, FingerprintError
from autoseg.fingerprint import intensity
from autoseg.fingerprint.fingerprint import SCHEMA_VERSION, CaseFingerprint, DatasetFingerprint
from autoseg.log import logger, progress
from autoseg.serialization import atomic_write_text

if TYPE_CHECKING:
    from autoseg.workspace import Workspace

DEFAULT_SEED = 1234
DEFAULT_SAMPLE_BUDGET = 10**8  # foreground intensity draws over the whole dataset, as nnU-Net
MERGE_EVERY = 1 << 21  # pending (value, count) pairs per channel before they are folded into the pool


def label_voxels(label: np.ndarray, foreground: tuple[int, ...], where: str) -> dict[str, int]:
    """Voxel count per declared foreground label value (keys are the values as strings)."""
    flat = np.ravel(label)
    if flat.size and flat.min() < 0:
        raise DatasetError(f"{where}: label map has negative values (min {flat.min()}); run `autoseg verify`")
    counts = np.bincount(flat.astype(np.int64, copy=False)) if flat.size else np.zeros(1, np.int64)
    return {str(v): int(counts[v]) if v < counts.size else 0 for v in foreground}


def case_fingerprint(
    case: Case, foreground: tuple[int, ...], n_samples: int, seed: int, index: int, ignore_label: int | None = None
) -> tuple[CaseFingerprint, tuple[intensity.WeightedSample, ...]]:
    """Fingerprint one case -> (CaseFingerprint, one WeightedSample of foreground intensities per channel).

    Label volumes are counted on the whole (uncropped) label map for every value of `foreground` (the ignore label's
    voxels too); 2D images get no volumes (their slice thickness is the 999 mm placeholder), only voxel counts.
    Intensities are drawn from label > 0 voxels other than the ignore label (their class is unknown).
    """
    if case.label is None:
        raise DatasetError(f"case {case.case_id!r}: label file is missing; run `autoseg verify`")
    image, geo = read_image(case.images)
    label, label_geo = read_label(case.label)
    problems = loaded_case_problems(case, image, geo, label, label_geo, (0, *foreground))
    if problems:
        raise DatasetError("; ".join(problems) + " (`autoseg verify` lists every problem of the dataset)")
    box = bounding_box(nonzero_mask(image))
    crop = tuple(slice(lo, hi) for lo, hi in box)
    foreground_mask = label[crop] > 0
    if ignore_label is not None:
        foreground_mask &= label[crop] != ignore_label
    rng = np.random.default_rng([seed, index])
    samples = tuple(intensity.draw(image[c][crop][foreground_mask], n_samples, rng) for c in range(image.shape[0]))
    voxels = label_voxels(label, foreground, str(case.label))
    ml_per_voxel = math.prod(geo.spacing) / 1000.0
    fp = CaseFingerprint(
        case_id=case.case_id,
        spacing=tuple(float(s) for s in geo.spacing),
        shape_after_crop=tuple(hi - lo for lo, hi in box),
        shape_before_crop=tuple(int(s) for s in image.shape[1:]),
        label_voxels=voxels,
        label_volumes_ml=None if geo.is_2d else {k: round(n * ml_per_voxel, 6) for k, n in voxels.items()},
    )
    return fp, samples


def relative_size(case: CaseFingerprint) -> float:
    return math.prod(case.shape_after_crop) / math.prod(case.shape_before_crop)


class _Pool:
    """Running pooled sample of one channel, folded in case order (bounded memory, deterministic)."""

    def __init__(self) -> None:
        self.pool, self.pending, self.n_pending = intensity.EMPTY, [], 0

    def add(self, sample: intensity.WeightedSample) -> None:
        self.pending.append(sample)
        self.n_pending += sample.values.size
        if self.n_pending > max(MERGE_EVERY, self.pool.values.size):
            self.fold()

    def fold(self) -> intensity.WeightedSample:
        self.pool = intensity.merge([self.pool, *self.pending])
        self.pending, self.n_pending = [], 0
        return self.pool


def _cases(spec: DatasetSpec) -> list[Case]:
    cases, problems = list_cases(spec)
    if problems:
        shown = "\n".join(problems[:10]) + (f"\n... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise DatasetError(f"{spec.folder}: dataset has problems, run `autoseg verify` for all of them:\n{shown}")
    if not cases:
        raise DatasetError(f"{spec.folder / 'imagesTr'}: no training cases found")
    check_num_training(spec, len(cases))  # same message as `autoseg verify`
    return cases


def _check_dimensions(cases: list[Case], fps: list[CaseFingerprint]) -> None:
    """2D (pseudo spacing 999 on the first axis) and 3D cases must not be mixed."""
    is_2d = [fp.spacing[0] == PSEUDO_SPACING_2D for fp in fps]
    if 0 < sum(is_2d) < len(is_2d):
        few = sum(is_2d) <= len(is_2d) / 2
        odd = next(c for c, d in zip(cases, is_2d) if d == few)
        raise DatasetError(
            f"{odd.images[0]}: is {'2D' if few else '3D'} while other cases are {'3D' if few else '2D'} "
            "(2D and 3D cases are mixed)"
        )


def extract_fingerprint(
    spec: DatasetSpec, jobs: int = 2, seed: int = DEFAULT_SEED, sample_budget: int = DEFAULT_SAMPLE_BUDGET
) -> tuple[DatasetFingerprint, list[dict]]:
    """Fingerprint every training case of `spec` in parallel -> (DatasetFingerprint, per-case table rows).

    Args:
        spec: the raw dataset (from `autoseg.data.dataset.load_dataset`).
        jobs: worker processes (loky); 1 runs in this process.
        seed: global seed; case i samples with ``default_rng([seed, i])``.
        sample_budget: foreground intensity draws over the dataset, split evenly over the cases.
    """
    cases = _cases(spec)
    jobs = workers_for_cases(jobs, cases, "fingerprint")
    n_samples = sample_budget // len(cases)
    logger.info(f"fingerprint {spec.name}: {len(cases)} cases, {n_samples} intensity samples per case, {jobs} jobs")
    scheme = spec.scheme
    counted = tuple(v for v in scheme.file_values if v != 0)  # the ignore label's voxels are counted too
    ignore = scheme.ignore_label
    tasks = (delayed(case_fingerprint)(c, counted, n_samples, seed, i, ignore) for i, c in enumerate(cases))
    results = Parallel(n_jobs=jobs, backend="loky", return_as="generator")(tasks)
    pools = [_Pool() for _ in range(spec.num_channels)]
    case_fps = []
    for fp, samples in progress(results, total=len(cases), desc="fingerprint", unit="case"):
        case_fps.append(fp)
        for pool, sample in zip(pools, samples):
            pool.add(sample)
    _check_dimensions(cases, case_fps)
    pooled = [p.fold() for p in pools]
    if pooled[0].values.size == 0:
        raise FingerprintError(f"{spec.folder / 'labelsTr'}: no case has foreground (label > 0) voxels")
    fingerprint = DatasetFingerprint(
        schema_version=SCHEMA_VERSION,
        dataset=spec.name,
        channel_names=spec.channel_names,
        labels=dict(spec.labels),
        num_training=len(cases),
        file_ending=spec.file_ending,
        cases=tuple(case_fps),
        intensity=tuple(intensity.stats(s) for s in pooled),
        median_relative_size_after_cropping=float(np.median([relative_size(c) for c in case_fps])),
        intensity_samples_per_case=n_samples,
        seed=seed,
        regions_class_order=spec.regions_class_order,
    )
    return fingerprint, table_rows(fingerprint, spec.label_names)


def table_rows(fingerprint: DatasetFingerprint, label_names: dict[int, str]) -> list[dict]:
    """One flat row per case: spacing, shapes, relative size, voxels and ml per foreground label."""
    rows = []
    for c in fingerprint.cases:
        row: dict = {"case": c.case_id}
        for prefix, values in (
            ("spacing", c.spacing),
            ("shape_before", c.shape_before_crop),
            ("shape_after", c.shape_after_crop),
        ):
            row.update({f"{prefix}_{ax}": v for ax, v in zip("zyx", values)})
        row["relative_size"] = relative_size(c)
        for key, n in (c.label_voxels or {}).items():
            name = label_names.get(int(key), key)
            row[f"voxels_{name}"] = n
            if c.label_volumes_ml is not None:
                row[f"ml_{name}"] = c.label_volumes_ml[key]
        rows.append(row)
    return rows


def write_fingerprint(
    fingerprint: DatasetFingerprint, rows: list[dict], json_path: str | Path, csv_path: str | Path
) -> tuple[Path, Path]:
    """Write the fingerprint JSON and the per-case CSV, each atomically."""
    fingerprint.save(json_path)
    atomic_write_text(csv_path, pd.DataFrame(rows).to_csv(index=False, float_format="%.6g"))
    return Path(json_path), Path(csv_path)


def fingerprint_dataset(
    ws: Workspace, name: str, jobs: int = 2, seed: int = DEFAULT_SEED, sample_budget: int = DEFAULT_SAMPLE_BUDGET
) -> tuple[DatasetFingerprint, Path, Path]:
    """Fingerprint raw dataset `name` of workspace `ws`; write ``ws.fingerprint_file`` and ``ws.fingerprint_table``."""
    spec = load_dataset(ws.raw_dataset(name))
    fingerprint, rows = extract_fingerprint(spec, jobs=jobs, seed=seed, sample_budget=sample_budget)
    json_path, csv_path = write_fingerprint(fingerprint, rows, ws.fingerprint_file(name), ws.fingerprint_table(name))
    return fingerprint, json_path, csv_path
