"""Convert a Medical Segmentation Decathlon task folder (TaskNN_Name) into autoseg's raw layout (nnU-Net v2).

An MSD task holds `dataset.json` with "modality" ({"0": "FLAIR", ...}), "labels" ({"0": "background", ...}) and a
"training" list of {"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}; multi-modal images are 4D
files without a channel suffix, and macOS archives add "._x.nii.gz" files that are not images. The conversion
writes `DatasetXXX_Name/` with one file per channel (`x_0000.nii.gz`, ...), the labels copied unchanged and a v2
dataset.json. Everything is written into a hidden temporary folder that is renamed at the end, so a failed or
interrupted run leaves no half-written dataset behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autoseg.errors import DatasetError
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


def _case_id(path: Path) -> str:
    name = path.name
    for ending in (".nii.gz", ".nii"):
        if name.endswith(ending):
            return name[: -len(ending)]
    raise DatasetError(f"{path}: MSD images must be NIfTI files (.nii.gz or .nii)")


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


def _training_cases(folder: Path, entries, where: Path) -> tuple[MsdCase, ...]:
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f'{where}: "training" must be a non-empty list of {{"image": ..., "label": ...}}')
    cases, missing = [], []
    for entry in entries:
        if not isinstance(entry, dict) or not {"image", "label"} <= set(entry):
            raise DatasetError(f'{where}: every "training" entry needs "image" and "label", found {entry!r}')
        image, label = folder / entry["image"], folder / entry["label"]
        if _hidden(image):
            continue
        missing += [str(p) for p in (image, label) if not p.is_file()]
        cases.append(MsdCase(_case_id(image), image, label))
    if missing:
        raise DatasetError(f"{where}: {len(missing)} listed file(s) do not exist: {', '.join(missing[:5])}")
    return tuple(sorted(cases, key=lambda c: c.case_id))


def read_msd_task(folder: str | Path) -> MsdTask:
    """Parse an MSD task folder; raise DatasetError naming the file and the problem."""
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
        raise DatasetError(str(exc)) from None
    if not isinstance(data, dict):
        raise DatasetError(f"{where}: must hold a JSON object")
    modality = data.get("modality", data.get("channel_names"))
    if not isinstance(modality, dict) or set(modality) != {str(i) for i in range(len(modality))} or not modality:
        raise DatasetError(f'{where}: "modality" must be an object like {{"0": "MRI"}}, found {modality!r}')
    img_ts = folder / "imagesTs"
    test = sorted(p for p in img_ts.iterdir() if not _hidden(p) and p.is_file()) if img_ts.is_dir() else []
    return MsdTask(
        folder=folder,
        task_id=int(m.group(1)),
        name=m.group(2),
        modalities=tuple(str(modality[str(i)]) for i in range(len(modality))),
        labels=_parse_labels(data.get("labels"), where),
        training=_training_cases(folder, data.get("training"), where),
        test=tuple(MsdCase(_case_id(p), p, None) for p in test),
        meta={k: str(data[k]) for k in META_KEYS if k in data},
    )


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
    from autoseg.data.image_io import read_4d, write_image

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
    """
    task = read_msd_task(task_folder)
    raw_root = Path(raw_root)
    target = _target(raw_root, task, dataset_id)
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
            from joblib import Parallel, delayed

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
