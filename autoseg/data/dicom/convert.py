"""A raw dataset (nnU-Net v2 layout) from DICOM image series and their masks (DICOM-SEG or NIfTI): `convert_dicom`.

Every image series under the input folder is one case (`scan_dicom`; case ids as `autoseg predict` names them). Its
mask is a DICOM-SEG in the folder that references the series (segments matched to `--labels` by SegmentLabel) or a
NIfTI label map named after the case (CASE.nii.gz) or the series (SeriesInstanceUID.nii.gz) anywhere in the folder.
A mask must lie on its image's grid: a SEG's frames must reference the series' slices, a NIfTI mask must have the
series' shape, spacing, origin and direction (tolerances of `autoseg verify`) and only values 0..len(labels).
Series without a mask go to imagesTs. All series must share one Modality (a dataset has one channel here).

Every problem (unreadable or inconsistent series, masks on another grid, unknown segment names or label values,
masks that match no series or two masks for one series, a dataset id already used) is named in one error before
anything is written; the dataset is written into a hidden folder that is renamed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from autoseg.data.dicom.pixels import read_series
from autoseg.data.dicom.seg import read_dicom_seg
from autoseg.data.dicom.series import DicomSeries, scan_dicom
from autoseg.data.image_io import read_label, write_image, write_label
from autoseg.errors import AutosegError, DatasetError, problems_error
from autoseg.log import logger, progress
from autoseg.serialization import save_json

NIFTI_MASK_ENDINGS = (".nii.gz", ".nii")


def label_map(names: list[str] | tuple[str, ...]) -> dict[str, int]:
    """--labels liver tumour -> {"background": 0, "liver": 1, "tumour": 2}; DatasetError for repeated or empty names
    (or a "background" given explicitly: it is always 0)."""
    clean = [str(n).strip() for n in names]
    problems = [f"--labels: empty label name at position {i + 1}" for i, n in enumerate(clean) if not n]
    lowered = [n.lower() for n in clean]
    problems += [f"--labels: {n!r} is given twice" for i, n in enumerate(clean) if n and n.lower() in lowered[:i]]
    problems += ["--labels: 'background' is label 0 already; list the foreground labels" for n in lowered
                 if n == "background"]  # fmt: skip
    if not clean:
        problems.append("--labels: at least one foreground label name is needed")
    if problems:
        raise problems_error(problems)
    return {"background": 0, **{n: i for i, n in enumerate(clean, start=1)}}


def _nifti_masks(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if f.lower().endswith(NIFTI_MASK_ENDINGS) and f[0] != "."]
    return found


def _stem(path: Path) -> str:
    name = path.name
    return next(name[: -len(e)] for e in NIFTI_MASK_ENDINGS if name.lower().endswith(e))


def match_masks(folder: Path, series: tuple[DicomSeries, ...], segs) -> tuple[dict[str, Path], list[str]]:
    """(case id -> mask file, problems): SEG objects by the series they reference, NIfTI files by name."""
    by_uid = {s.uid: s for s in series}
    by_name = {s.case_id: s for s in series} | by_uid
    found: dict[str, list[Path]] = defaultdict(list)
    problems = []
    for seg in segs:
        hits = [by_uid[u] for u in seg.referenced_series if u in by_uid]
        if not hits:
            problems.append(f"{seg.path}: a DICOM-SEG whose referenced series {', '.join(seg.referenced_series)} is "
                            "not among the image series found")  # fmt: skip
        for s in hits:
            found[s.case_id].append(seg.path)
    for path in _nifti_masks(folder):
        s = by_name.get(_stem(path))
        if s is None:
            problems.append(f"{path}: a NIfTI mask must be named after its series' case id or SeriesInstanceUID "
                            f"(case ids: {', '.join(sorted(x.case_id for x in series)) or 'none'})")  # fmt: skip
        else:
            found[s.case_id].append(path)
    for cid, paths in found.items():
        if len(paths) > 1:
            problems.append(f"series {cid}: {len(paths)} masks ({', '.join(map(str, paths))}); keep one")
    return {cid: paths[0] for cid, paths in found.items() if len(paths) == 1}, problems


def read_mask(path: Path, series: DicomSeries, labels: dict[str, int]) -> np.ndarray:
    """The mask of `series` as a label map on its grid; DatasetError naming `path` when it is not on that grid or
    holds values (segments) that `labels` does not name."""
    if not path.name.lower().endswith(NIFTI_MASK_ENDINGS):
        return read_dicom_seg(path, series, labels)
    mask, geometry = read_label(path)
    if mask.shape != series.shape:
        raise DatasetError(f"{path}: shape {mask.shape} is not the grid of {series.name} {series.shape}")
    if diffs := geometry.matches(series.geometry):
        raise DatasetError(f"{path}: not on the grid of {series.name}: {'; '.join(diffs)}")
    if not np.issubdtype(mask.dtype, np.integer) and not np.array_equal(mask, np.round(mask)):
        raise DatasetError(f"{path}: label values must be whole numbers")
    bad = sorted(set(np.unique(mask).astype(np.int64).tolist()) - set(labels.values()))
    if bad:
        raise DatasetError(f"{path}: label value(s) {bad} are not among the labels {labels} (--labels)")
    return mask.astype(np.uint8 if max(labels.values()) < 256 else np.uint16)


def _target(raw_root: Path, dataset_id: int, name: str) -> Path:
    if not 1 <= dataset_id <= 999:
        raise DatasetError(f"dataset id {dataset_id} is out of range (1-999)")
    if not name or any(c in name for c in "/\\ "):
        raise DatasetError(f"--name {name!r}: a dataset name must be one word without slashes or spaces")
    taken = sorted(p.name for p in raw_root.glob(f"Dataset{dataset_id:03d}_*")) if raw_root.is_dir() else []
    if taken:
        raise DatasetError(f"{raw_root / taken[0]}: dataset id {dataset_id:03d} is already used; remove that folder "
                           "or pick another -d")  # fmt: skip
    return raw_root / f"Dataset{dataset_id:03d}_{name}"


def convert_dicom(inp: str | os.PathLike, raw_root: str | os.PathLike, dataset_id: int, labels: list[str],
                  name: str = "DICOM") -> Path:  # fmt: skip
    """DICOM series + masks under `inp` -> `raw_root/DatasetXXX_<name>` (imagesTr, labelsTr, imagesTs, dataset.json
    with channel "0" = the series' Modality and `labels` after background); returns that folder."""
    inp, raw_root = Path(inp), Path(raw_root)
    label_values = label_map(labels)
    problems = []
    try:
        target = _target(raw_root, dataset_id, name)
    except DatasetError as exc:
        problems.append(str(exc))
    if not inp.is_dir():
        raise problems_error([*problems, f"{inp}: input folder not found"])
    scan = scan_dicom(inp)
    problems += scan.problems
    masks, found = match_masks(inp, scan.series, scan.segs)
    problems += found
    modalities = defaultdict(list)
    for s in scan.series:
        modalities[s.modality or "unknown"].append(s.case_id)
    if len(modalities) > 1:
        problems.append(f"{inp}: series of {len(modalities)} modalities (" + "; ".join(
            f"{m}: {', '.join(c[:3])}{' ...' if len(c) > 3 else ''}" for m, c in modalities.items()
        ) + "); a dataset has one channel, so convert one modality at a time")  # fmt: skip
    by_id = {s.case_id: s for s in scan.series}
    for cid, path in progress(sorted(masks.items()), desc="check masks", unit="mask"):
        try:
            read_mask(path, by_id[cid], label_values)
        except AutosegError as exc:
            problems.append(str(exc))
    if not scan.series and not problems:
        problems.append(f"{inp}: no DICOM image series found")
    if not masks and scan.series and not problems:
        problems.append(f"{inp}: no mask found for any series (DICOM-SEG referencing a series, or CASE.nii.gz)")
    if problems:
        raise problems_error(problems)
    raw_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=raw_root))
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        for s in progress(scan.series, desc="convert_dicom", unit="series"):
            image, geometry = read_series(s)
            folder = "imagesTr" if s.case_id in masks else "imagesTs"
            write_image(tmp / folder / f"{s.case_id}_0000.nii.gz", image[0], geometry)
            if s.case_id in masks:
                write_label(tmp / "labelsTr" / f"{s.case_id}.nii.gz", read_mask(masks[s.case_id], s, label_values),
                            geometry)  # fmt: skip
        if not any((tmp / "imagesTs").iterdir()):
            (tmp / "imagesTs").rmdir()
        save_json(tmp / "dataset.json", {
            "channel_names": {"0": next(iter(modalities))},
            "labels": label_values,
            "numTraining": len(masks),
            "file_ending": ".nii.gz",
            "name": name,
            "converted_from": str(inp),
            "converted_by": "autoseg convert_dicom",
            "series": {s.case_id: s.uid for s in scan.series},
        })  # fmt: skip
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    unlabelled = len(scan.series) - len(masks)
    logger.info(f"converted {len(masks)} labelled series (+{unlabelled} without a mask, in imagesTs) into {target}")
    return target
