"""Convert a Medical Segmentation Decathlon task folder (TaskNN_Name) into autoseg's raw layout (nnU-Net v2).

An MSD task holds `dataset.json` with "modality" ({"0": "FLAIR", ...}), "labels" ({"0": "background", ...}) and a
"training" list of {"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}; multi-modal images are 4D
files without a channel suffix, and macOS archives add "._x.nii.gz" files that are not images. The conversion
writes `DatasetXXX_Name/` with one file per channel (`x_0000.nii.gz`, ...), the labels copied unchanged and a v2
dataset.json. Every source file is checked first (`source_problems`: missing, empty, corrupt or truncated files,
images whose volume count differs from the modalities, unreadable or mismatched labels) and every problem named in
one error before anything is written. Everything is then written into a hidden temporary folder that is renamed at
the end, so a failed or interrupted run leaves no half-written dataset behind.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from joblib import Parallel, delayed

from autoseg.data.image_io import read_4d, read_header, write_image
from autoseg.data.nifti import check_nifti
from autoseg.errors import DatasetError, ImageIOError, problems_error
from autoseg.log import logger, progress
from autoseg.serialization import load_json, save_json

TASK_RE = re.compile(r"^Task(\d+)_(.+)$")
META_KEYS = ("description", "reference", "licence", "release", "tensorImageSize")


@dataclass(frozen=True)
class MsdCase:
    case_id: str
    image: Path  # 3D, or 4D with one volume per modality
    label: Path | None  # None for test images


@dataclass(frozen=True)
class MsdTask:
    folder: Path
    task_id: int
    name: str
    modalities: tuple[str, ...]
    labels: dict[str, int]  # name -> value, ordered by value
    training: tuple[MsdCase, ...]
    test: tuple[MsdCase, ...]
    meta: dict[str, str]


def _case_id(path: Path) -> str | None:
    """'x.nii.gz' -> 'x'; None if `path` is not named like a NIfTI file."""
    name = path.name
    for ending in (".nii.gz", ".nii"):
        if name.endswith(ending):
            return name[: -len(ending)]
    return None


def _not_nifti(path: Path) -> str:
    return f"{path}: MSD images must be NIfTI files (.nii.gz or .nii)"


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")  # covers the "._x.nii.gz" resource forks of macOS archives


def _parse_labels(raw, where: Path) -> dict[str, int]:
    if not isinstance(raw, dict) or not raw or not all(str(k).isdigit() for k in raw):
        raise DatasetError(f'{where}: "labels" must map label values to names, like {{"0": "background"}}')
    labels: dict[str, int] = {}
    for key in sorted(raw, key=int):
        name = str(raw[key])
        if name in labels:
            raise DatasetError(f"{where}: label name {name!r} is used for two values")
        labels[name] = int(key)
    return labels


def _training_cases(folder: Path, entries, where: Path) -> tuple[tuple[MsdCase, ...], list[str]]:
    """(the listed cases whose files exist, a "PATH: what is wrong" line for every missing or non-NIfTI file)."""
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f'{where}: "training" must be a non-empty list of {{"image": ..., "label": ...}}')
    cases, problems = [], []
    for entry in entries:
        if not isinstance(entry, dict) or not {"image", "label"} <= set(entry):
            raise DatasetError(f'{where}: every "training" entry needs "image" and "label", found {entry!r}')
        image, label = folder / entry["image"], folder / entry["label"]
        if _hidden(image):
            continue
        missing = [f"{p}: listed in {where} but does not exist" for p in (image, label) if not p.is_file()]
        case_id = _case_id(image)
        problems += missing if case_id is not None else [_not_nifti(image), *missing]
        if case_id is not None and not missing:
            cases.append(MsdCase(case_id, image, label))
    return tuple(sorted(cases, key=lambda c: c.case_id)), problems


def read_msd_task(folder: str | Path) -> MsdTask:
    """Parse an MSD task folder; raise DatasetError naming the file and the problem (every missing or non-NIfTI
    image or label file at once)."""
    task, problems = _parse_task(folder)
    if problems:
        raise problems_error(problems)
    return task


def _parse_task(folder: str | Path) -> tuple[MsdTask, list[str]]:
    """(the task, every missing or non-NIfTI file listed in dataset.json or found in imagesTs, "PATH: what is wrong";
    such files are left out of the task). A malformed task folder or dataset.json raises DatasetError at once."""
    folder = Path(folder)
    m = TASK_RE.match(folder.name)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: MSD task folder does not exist")
    if not m:
        raise DatasetError(f"{folder}: folder name must look like TaskNN_Name (e.g. Task04_Hippocampus)")
    where = folder / "dataset.json"
    try:
        data = load_json(where)
    except ValueError as exc:
        raise DatasetError(str(exc)) from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{where}: must hold a JSON object")
    modality = data.get("modality", data.get("channel_names"))
    if not isinstance(modality, dict) or set(modality) != {str(i) for i in range(len(modality))} or not modality:
        raise DatasetError(f'{where}: "modality" must be an object like {{"0": "MRI"}}, found {modality!r}')
    img_ts = folder / "imagesTs"
    test = sorted(p for p in img_ts.iterdir() if not _hidden(p) and p.is_file()) if img_ts.is_dir() else []
    labels = _parse_labels(data.get("labels"), where)
    training, problems = _training_cases(folder, data.get("training"), where)
    problems += [_not_nifti(p) for p in test if _case_id(p) is None]
    task = MsdTask(
        folder=folder,
        task_id=int(m.group(1)),
        name=m.group(2),
        modalities=tuple(str(modality[str(i)]) for i in range(len(modality))),
        labels=labels,
        training=training,
        test=tuple(MsdCase(cid, p, None) for p in test if (cid := _case_id(p)) is not None),
        meta={k: str(data[k]) for k in META_KEYS if k in data},
    )
    return task, problems


def _nifti_dims(path: Path) -> tuple[int, ...] | None:
    """The sizes dim[1..ndim] (x, y, z, volumes) of a NIfTI-1/2 header, either byte order; None if not NIfTI."""
    with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as fh:
        header = fh.read(540)
    for order in "<>":
        size = struct.unpack(order + "i", header[:4])[0] if len(header) >= 4 else 0
        if size == 348 and len(header) >= 348:
            dims = struct.unpack(order + "8h", header[40:56])
        elif size == 540 and len(header) >= 540:
            dims = struct.unpack(order + "8q", header[16:80])
        else:
            continue
        if 1 <= dims[0] <= 7:
            return tuple(int(d) for d in dims[1 : dims[0] + 1])
    return None


def _image_problems(path: Path, n_channels: int) -> tuple[tuple[int, ...] | None, list[str]]:
    """(the image's (Z, Y, X) shape or None, its problems): empty, corrupt or truncated (`check_nifti`), not a NIfTI
    image, not 2D/3D/4D, or a volume count other than `n_channels`. Reads the header (and the gzip trailer; float
    voxels are scanned for NaN/Inf), not the image."""
    try:
        if path.stat().st_size == 0:
            return None, [f"{path}: file is empty (0 bytes)"]
        check_nifti(path)
        dims = _nifti_dims(path)
    except ImageIOError as exc:
        return None, [str(exc)]
    except (OSError, EOFError, zlib.error) as exc:
        return None, [f"{path}: cannot be read, the file is corrupt or truncated ({exc})"]
    if dims is None:
        return None, [f"{path}: is not a NIfTI image (no NIfTI-1 or NIfTI-2 header)"]
    if not 2 <= len(dims) <= 4:
        return None, [f"{path}: is a {len(dims)}D image; MSD images are 3D, or 4D with one volume per modality"]
    shape = (1, dims[1], dims[0]) if len(dims) == 2 else (dims[2], dims[1], dims[0])
    volumes = dims[3] if len(dims) == 4 else 1
    if volumes != n_channels:
        return shape, [f"{path}: holds {volumes} volume(s) but dataset.json's modality declares {n_channels}"]
    return shape, []


def _case_problems(case: MsdCase, n_channels: int) -> list[str]:
    """Every problem of one case's source files (`_image_problems`; the label: unreadable, not one component per
    pixel, a shape other than the image's), found from headers before anything is converted."""
    shape, problems = _image_problems(case.image, n_channels)
    if case.label is None:
        return problems
    try:
        label_shape, components, _ = read_header(case.label)
        check_nifti(case.label)
    except ImageIOError as exc:
        return [*problems, str(exc)]
    except OSError as exc:
        return [*problems, f"{case.label}: cannot be read ({exc.strerror or exc})"]
    if components != 1:
        problems.append(f"{case.label}: a label map must have one component per pixel, found {components}")
    elif shape is not None and label_shape != shape:
        problems.append(f"{case.label}: shape {label_shape} differs from its image {case.image.name} {shape}")
    return problems


def source_problems(task: MsdTask, jobs: int = 1) -> list[str]:
    """Every problem of the task's image and label files, one "PATH: what is wrong" line each, in case order
    (`_case_problems`; `jobs` worker processes). Empty when every case can be converted."""
    cases, n = [*task.training, *task.test], len(task.modalities)
    bar = {"total": len(cases), "desc": "check sources", "unit": "case"}
    if jobs <= 1:
        found = [_case_problems(c, n) for c in progress(cases, **bar)]
    else:
        par = Parallel(n_jobs=jobs, backend="loky", return_as="generator")
        found = list(progress(par(delayed(_case_problems)(c, n) for c in cases), **bar))
    return [problem for case_problems in found for problem in case_problems]


def v2_dataset_json(task: MsdTask) -> dict:
    """The nnU-Net v2 dataset.json for a converted task."""
    return {
        "channel_names": {str(i): m for i, m in enumerate(task.modalities)},
        "labels": dict(task.labels),
        "numTraining": len(task.training),
        "file_ending": ".nii.gz",
        "name": task.name,
        **task.meta,
        "converted_from": task.folder.name,
        "converted_by": "autoseg convert_msd",
    }


def convert_case(case: MsdCase, n_channels: int, out: Path) -> None:
    """Split one MSD image into per-channel files (geometry kept) and copy its label."""
    arr, geo = read_4d(case.image)
    if arr.shape[0] != n_channels:
        raise DatasetError(
            f"{case.image}: holds {arr.shape[0]} volume(s) but dataset.json's modality declares {n_channels}"
        )
    img_dir = out / ("imagesTr" if case.label is not None else "imagesTs")
    for c in range(n_channels):
        write_image(img_dir / f"{case.case_id}_{c:04d}.nii.gz", arr[c], geo)
    if case.label is not None:
        shutil.copyfile(case.label, out / "labelsTr" / f"{case.case_id}.nii.gz")


def _target(raw_root: Path, task: MsdTask, dataset_id: int | None) -> Path:
    did = task.task_id if dataset_id is None else dataset_id
    if not 1 <= did <= 999:
        raise DatasetError(f"dataset id {did} is out of range (1-999)")
    target = raw_root / f"Dataset{did:03d}_{task.name}"
    taken = sorted(p.name for p in raw_root.glob(f"Dataset{did:03d}_*")) if raw_root.is_dir() else []
    if taken:
        raise DatasetError(
            f"{raw_root / taken[0]}: dataset id {did:03d} is already used; remove that folder or pick another -d"
        )
    return target


def convert_msd(task_folder: str | Path, raw_root: str | Path, dataset_id: int | None = None, jobs: int = 1) -> Path:
    """Convert an MSD task folder into `raw_root/DatasetXXX_Name` and return that folder.

    Args:
        task_folder: e.g. .../Task04_Hippocampus (dataset.json, imagesTr/, labelsTr/, optional imagesTs/).
        raw_root: the workspace's raw folder.
        dataset_id: id of the new dataset (default: the task number).
        jobs: parallel worker processes.

    Every problem (dataset id already used, missing or broken source files) is named in one DatasetError before
    anything is written.
    """
    task, problems = _parse_task(task_folder)
    raw_root = Path(raw_root)
    try:
        target = _target(raw_root, task, dataset_id)
    except DatasetError as exc:  # named together with the source files' problems
        raise problems_error([str(exc), *problems, *source_problems(task, jobs)]) from exc
    if problems := problems + source_problems(task, jobs):
        raise problems_error(problems)
    raw_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=raw_root))
    try:
        for sub in ("imagesTr", "labelsTr") + (("imagesTs",) if task.test else ()):
            (tmp / sub).mkdir()
        cases = [*task.training, *task.test]
        n = len(task.modalities)
        bar = {"total": len(cases), "desc": "convert_msd", "unit": "case"}
        if jobs <= 1:
            for case in progress(cases, **bar):
                convert_case(case, n, tmp)
        else:
            par = Parallel(n_jobs=jobs, backend="loky", return_as="generator")
            for _ in progress(par(delayed(convert_case)(c, n, tmp) for c in cases), **bar):
                pass
        save_json(tmp / "dataset.json", v2_dataset_json(task))
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("converted %d training and %d test cases into %s", len(task.training), len(task.test), target)
    return target
