"""Preprocess one case (transpose -> crop -> normalise -> resample -> foreground locations) and whole datasets.

`preprocess_case` is the pure per-case transform (nnU-Net's preprocessing) used for training data and at inference;
`preprocess_dataset` runs it over a raw dataset for one or more configurations of a plans file:

- one joblib/loky task per case: the case is read, cropped and normalised once and then resampled for every
  requested configuration (configurations sharing a ``data_identifier`` are written once);
- resumable: a case whose ``.json`` exists is skipped (storage writes it last), unless ``overwrite``; a folder made
  with different settings (``.settings.json``) is cleared first; leftovers of killed runs (hidden temporary files,
  `autoseg.serialization.remove_stale_temps`) are removed under the folder's lock;
- a lock file (``.lock``, flock) per configuration folder stops a second process from writing the same folder;
- ground-truth label files are copied (atomically) to ``ws.gt_folder(dataset)`` for later evaluation; runs of
  several configurations share that folder (`SharedFolderLock`);
- workers are limited by the available memory (one case per worker at a time).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

from autoseg.data.crop import crop_to_nonzero
from autoseg.data.dataset import check_num_training, list_cases, load_dataset
from autoseg.data.geometry import PSEUDO_SPACING_2D, Geometry
from autoseg.data.image_io import read_image, read_label
from autoseg.data.verify import loaded_case_problems
from autoseg.errors import DatasetError, FingerprintError
from autoseg.fingerprint.fingerprint import DatasetFingerprint
from autoseg.log import logger, progress
from autoseg.planning.plans import Configuration, Plans
from autoseg.preprocessing.folders import (
    FolderLock,
    SharedFolderLock,
    choose_jobs,
    clean_folder,
    folder_settings,
    prepare_folder,
)
from autoseg.preprocessing.normalize import normalize, resolve_scheme
from autoseg.preprocessing.resample import compute_new_shape, resample_data, resample_labels, separate_z_axis
from autoseg.preprocessing.storage import CaseProperties, PreprocessedCase, is_complete, save_case
from autoseg.resources import COPIES, case_bytes, describe
from autoseg.serialization import atomic_write
from autoseg.workspace import Workspace

LOCATION_SEED = 1234
MAX_LOCATIONS = 10_000
MIN_LOCATION_FRACTION = 0.01


def target_spacing(configuration: Configuration, spacing: Sequence[float]) -> tuple[float, ...]:
    """The configuration's spacing for a case of (transposed) `spacing`; a 2d configuration keeps the first axis."""
    target = tuple(float(s) for s in configuration.spacing)
    if len(target) == len(spacing):
        return target
    return (float(spacing[0]), *target[-(len(spacing) - 1) :])


def n_locations(n_voxels: int) -> int:
    """How many voxels of a label to store: max(min(10000, n), ceil(0.01 n))."""
    return max(min(MAX_LOCATIONS, n_voxels), math.ceil(MIN_LOCATION_FRACTION * n_voxels))


def sample_class_locations(seg: np.ndarray, case_id: str, seed: int = LOCATION_SEED) -> dict[int, np.ndarray]:
    """Per foreground label (> 0) of `seg` (Z, Y, X): voxel coordinates (N, 3) int32 drawn without replacement.

    Seeded by `seed` and the case id, so the same case always gives the same locations.
    """
    rng = np.random.default_rng([seed, zlib.crc32(case_id.encode("utf-8"))])
    flat = seg.ravel()
    out: dict[int, np.ndarray] = {}
    for label in (int(v) for v in np.unique(flat) if v > 0):
        idx = np.flatnonzero(flat == label)
        pick = np.sort(rng.choice(idx.size, size=n_locations(idx.size), replace=False))
        out[label] = np.stack(np.unravel_index(idx[pick], seg.shape), axis=1).astype(np.int32)
    return out


@dataclass(frozen=True)
class CroppedCase:
    """A case after transpose and crop (the configuration-independent first stage)."""

    image: np.ndarray  # (C, Z, Y, X) float32, transposed
    seg: np.ndarray  # (Z, Y, X) int8/int16, transposed, -1 outside the nonzero mask
    geometry: Geometry
    shape_before_crop: tuple[int, ...]  # raw order
    bbox: tuple[tuple[int, int], ...]  # raw order
    spacing: tuple[float, ...]  # transposed
    transpose: tuple[int, ...]


def crop_and_transpose(image: np.ndarray, seg: np.ndarray | None, geometry: Geometry, plans: Plans) -> CroppedCase:
    """Crop to the nonzero region (in raw axis order) and transpose into the plans' axis order."""
    image = np.asarray(image, dtype=np.float32)
    cropped, seg_c, box = crop_to_nonzero(image, seg)
    tr = tuple(int(a) for a in plans.transpose)
    return CroppedCase(
        image=cropped.transpose(0, *(a + 1 for a in tr)),
        seg=seg_c.transpose(tr),
        geometry=geometry,
        shape_before_crop=tuple(int(s) for s in image.shape[1:]),
        bbox=box,
        spacing=geometry.transposed(tr),
        transpose=tr,
    )


def normalized(cropped: CroppedCase, configuration: Configuration, intensity: tuple | None) -> np.ndarray:
    return normalize(
        cropped.image,
        cropped.seg,
        configuration.normalization,
        configuration.use_mask_for_norm,
        intensity,
        configuration.normalization_kwargs,
    )


def resample_case(
    cropped: CroppedCase, data: np.ndarray, configuration: Configuration, case_id: str, with_locations: bool = True
) -> PreprocessedCase:
    """Resample normalised `data` and the seg of `cropped` to the configuration's spacing; sample locations."""
    target = target_spacing(configuration, cropped.spacing)
    shape = compute_new_shape(data.shape[1:], cropped.spacing, target)
    rs = configuration.resampling
    axis = separate_z_axis(cropped.spacing, target, rs.anisotropy_threshold)
    out = resample_data(data, shape, axis, rs.order_data, rs.order_z)
    seg = resample_labels(cropped.seg, shape, axis, rs.order_seg, rs.order_z)
    locations = sample_class_locations(seg, case_id) if with_locations else {}
    props = CaseProperties(
        case_id=case_id,
        geometry=cropped.geometry,
        shape_before_crop=cropped.shape_before_crop,
        bbox=cropped.bbox,
        shape_after_crop=tuple(int(s) for s in data.shape[1:]),
        spacing=tuple(float(s) for s in cropped.spacing),
        target_spacing=target,
        shape_after_resample=tuple(int(s) for s in shape),
        transpose=cropped.transpose,
        foreground_labels=tuple(sorted(locations)),
    )
    return PreprocessedCase(out, seg[None], props, locations)


def preprocess_case(
    image: np.ndarray,
    seg: np.ndarray | None,
    geometry: Geometry,
    plans: Plans,
    configuration: Configuration,
    fingerprint: DatasetFingerprint | None = None,
    case_id: str = "case",
) -> PreprocessedCase:
    """Preprocess one case for `configuration` (training data, or a test image when `seg` is None).

    Args:
        image: (C, Z, Y, X) in raw axis order, any numeric dtype.
        seg: (Z, Y, X) label map or None (the returned seg is then the 0/-1 nonzero mask).
        geometry: the raw image's geometry (kept in the properties for export).
        plans, configuration: what to do (transpose, spacing, normalisation, resampling).
        fingerprint: DatasetFingerprint whose intensity statistics the "ct" scheme uses when the plans hold none.
    """
    intensity = plans.intensity if plans.intensity is not None else getattr(fingerprint, "intensity", None)
    cropped = crop_and_transpose(image, seg, geometry, plans)
    return resample_case(cropped, normalized(cropped, configuration, intensity), configuration, case_id)


# ---- whole datasets ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One output folder: the configuration that defines its preprocessing."""

    configuration: Configuration
    folder: Path


@dataclass(frozen=True)
class PreprocessReport:
    dataset: str
    folders: dict[str, Path]  # data_identifier -> folder
    processed: int  # cases (re)computed
    skipped: int  # cases already complete in every folder
    skipped_configurations: tuple[str, ...]  # e.g. the cascade, which shares 3d_fullres data
    jobs: int


def copy_ground_truth(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    atomic_write(dst, lambda fh: fh.write(data), fsync=False)


def process_case(
    case, plans: Plans, targets: list[Target], intensity: tuple | None, gt_dst: Path | None,
    label_values: tuple[int, ...] | None = None,
) -> str:  # fmt: skip
    """Worker task: read one raw case, check it (`loaded_case_problems`), write it to every target folder, copy
    its label file."""
    image, geo = read_image(case.images)
    seg, seg_geo = read_label(case.label) if case.label is not None else (None, None)
    problems = loaded_case_problems(case, image, geo, seg, seg_geo, label_values)
    planned_2d = PSEUDO_SPACING_2D in plans.original_median_spacing
    if geo.is_2d != planned_2d:
        problems.append(
            f"{case.images[0]}: is a {2 if geo.is_2d else 3}D image but the plans were made for "
            f"{2 if planned_2d else 3}D images (2D and 3D cases are mixed)"
        )
    if problems:
        raise DatasetError("; ".join(problems) + " (`autoseg verify` lists every problem of the dataset)")
    cropped = crop_and_transpose(image, seg, geo, plans)
    del image, seg
    cache: dict[tuple, np.ndarray] = {}
    for t in targets:
        key = (t.configuration.normalization, t.configuration.use_mask_for_norm)
        if key not in cache:
            cache[key] = normalized(cropped, t.configuration, intensity)
        save_case(t.folder, resample_case(cropped, cache[key], t.configuration, case.case_id))
    if gt_dst is not None and case.label is not None:
        copy_ground_truth(case.label, gt_dst)
    return case.case_id


def bytes_per_case(fingerprint: DatasetFingerprint | None, plans: Plans, targets: list[Target]) -> float:
    """Rough peak memory of one worker: the largest case in float32, times the largest resampling zoom, x 6."""
    return _worst_case(fingerprint, plans, targets)[0]


def _worst_case(fingerprint: DatasetFingerprint | None, plans: Plans, targets: list[Target]) -> tuple[float, str]:
    """(peak bytes of one worker, description of that case) from the fingerprint's shapes and spacings."""
    if fingerprint is None or not fingerprint.cases:
        return 0.0, ""
    tr = list(plans.transpose)
    worst, shape, channels = 0.0, (), len(fingerprint.channel_names)
    for c in fingerprint.cases:
        sp = [c.spacing[a] for a in tr]
        zoom = max(math.prod(s / t for s, t in zip(sp, target_spacing(t.configuration, sp))) for t in targets)
        need = case_bytes(c.shape_before_crop or c.shape_after_crop, channels, COPIES["preprocess"], zoom)
        worst, shape = max((worst, shape), (need, c.shape_before_crop or c.shape_after_crop))
    return worst, describe(shape, channels)


def _targets(
    ws: Workspace, name: str, plans: Plans, configurations: Sequence[str] | None
) -> tuple[list[Target], list[str]]:
    names = list(configurations) if configurations else plans.names()
    targets: dict[str, Target] = {}
    skipped = []
    for cname in names:
        cfg = plans.configuration(cname)
        if cfg.data_identifier in targets:  # e.g. the cascade's fullres stage shares 3d_fullres data
            logger.info(f"{cname}: shares the preprocessed data {cfg.data_identifier!r}, nothing extra to do")
            skipped.append(cname)
            continue
        targets[cfg.data_identifier] = Target(cfg, ws.preprocessed_config(name, cfg.data_identifier))
    return list(targets.values()), skipped


def _intensity(ws: Workspace, name: str, plans: Plans, targets: list[Target]):
    """(intensity stats for the "ct" scheme, fingerprint or None): from the plans, else the fingerprint file."""
    fp_path = ws.fingerprint_file(name)
    fingerprint = DatasetFingerprint.load(fp_path) if fp_path.is_file() else None
    if plans.intensity is not None:
        return plans.intensity, fingerprint
    needs_ct = any(resolve_scheme(s) == "ct" for t in targets for s in t.configuration.normalization)
    if needs_ct and fingerprint is None:
        raise FingerprintError(
            f"{fp_path}: missing; the plans use CT normalisation but hold no intensity statistics; "
            "run `autoseg fingerprint` (or `autoseg plan_and_preprocess`) first"
        )
    return (fingerprint.intensity if fingerprint is not None else None), fingerprint


def preprocess_dataset(
    ws: Workspace, dataset_name: str, plans: Plans, configurations: Sequence[str] | None = None, jobs: int = 2,
    overwrite: bool = False,
) -> PreprocessReport:  # fmt: skip
    """Preprocess every training case of raw dataset `dataset_name` for `configurations` (default: all in `plans`).

    Args:
        ws: the Workspace. dataset_name: ``DatasetXXX_Name``. plans: the loaded Plans.
        configurations: names of plans configurations; configurations sharing a data_identifier are done once.
        jobs: worker processes (reduced if the available memory is short); 1 runs in this process.
        overwrite: recompute cases that are already complete.
    """

    spec = load_dataset(ws.raw_dataset(dataset_name))
    cases, problems = list_cases(spec)
    if problems:
        raise DatasetError(f"{spec.folder}: {len(problems)} problem(s), run `autoseg verify`; first: {problems[0]}")
    check_num_training(spec, len(cases))  # before any lock or folder is made: nothing is written
    targets, skipped = _targets(ws, dataset_name, plans, configurations)
    intensity, fingerprint = _intensity(ws, dataset_name, plans, targets)
    gt = ws.gt_folder(dataset_name)
    existed = {f: f.is_dir() for f in [gt, *(t.folder for t in targets)]}
    with ExitStack() as stack:
        for t in targets:
            stack.enter_context(FolderLock(t.folder))
        made: dict[str, list] = {"cases": [], "gt": []}  # what this run creates (removed again if it fails)
        gt_lock = None
        try:
            gt_lock = stack.enter_context(SharedFolderLock(gt))  # removes stale temporary files if no other run
            return _run(spec, cases, plans, targets, skipped, gt, (intensity, fingerprint), jobs, overwrite, made)
        except Exception:
            rollback(existed, targets, made, gt_lock)
            raise


def rollback(
    existed: dict[Path, bool], targets: list[Target], made: dict[str, list], gt_lock: SharedFolderLock | None = None
) -> None:
    """After a failed run (called holding the folder locks): remove the cases this run was making and the folders
    it created, so that only complete earlier work stays. joblib stops the workers before the error gets here.
    The ground-truth folder is cleaned (and removed if this run made it) only when no other run shares it."""
    for cid in made["cases"]:
        for t in targets:
            for suffix in (".json", ".npy", "_seg.npy", "_locs.npy"):
                (t.folder / f"{cid}{suffix}").unlink(missing_ok=True)
    for path in made["gt"]:
        path.unlink(missing_ok=True)
    for folder, was_there in existed.items():
        if gt_lock is not None and folder == gt_lock.folder:
            gt_lock.release(remove_if_empty=not was_there)
        elif folder.is_dir() and folder in {t.folder for t in targets}:
            clean_folder(folder, remove_cases=False)
            if not was_there:
                for name in (".lock", ".settings.json"):
                    (folder / name).unlink(missing_ok=True)
                if not any(folder.iterdir()):
                    folder.rmdir()
    parent = targets[0].folder.parent if targets else None
    if parent is not None and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


def _run(spec, cases, plans: Plans, targets, skipped, gt: Path, stats, jobs: int, overwrite: bool, made: dict):
    (intensity, fingerprint), dataset_name = stats, spec.folder.name
    for t in targets:
        prepare_folder(t.folder, folder_settings(plans, t.configuration, intensity), overwrite)
    tasks = []
    for case in cases:
        todo = [t for t in targets if overwrite or not is_complete(t.folder, case.case_id)]
        gt_dst = gt / f"{case.case_id}{spec.file_ending}" if case.label is not None else None
        if gt_dst is not None and gt_dst.is_file() and not overwrite:
            gt_dst = None
        if todo or gt_dst is not None:
            tasks.append(delayed(process_case)(case, plans, todo, intensity, gt_dst, spec.label_values))
            made["cases"] += [case.case_id] if not any(is_complete(t.folder, case.case_id) for t in targets) else []
            made["gt"] += [gt_dst] if gt_dst is not None and not gt_dst.is_file() else []
    need, what = _worst_case(fingerprint, plans, targets)
    n_jobs = choose_jobs(jobs, need, what=what) if tasks else 1
    ids = ", ".join(t.configuration.data_identifier for t in targets)
    logger.info(f"preprocess {dataset_name} [{ids}]: {len(tasks)} of {len(cases)} cases to do, {n_jobs} jobs")
    results = Parallel(n_jobs=min(n_jobs, max(1, len(tasks))), backend="loky", return_as="generator_unordered")(tasks)
    for _ in progress(results, total=len(tasks), desc="preprocess", unit="case"):
        pass
    return PreprocessReport(
        dataset=dataset_name,
        folders={t.configuration.data_identifier: t.folder for t in targets},
        processed=len(tasks),
        skipped=len(cases) - len(tasks),
        skipped_configurations=tuple(skipped),
        jobs=n_jobs,
    )
