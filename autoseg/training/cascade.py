"""Cascade inputs: the previous stage's cross-validation predictions, in the cascade configuration's grid.

A cascade configuration (``previous_stage`` set, e.g. 3d_cascade_fullres after 3d_lowres) gets, besides the image,
one input channel per foreground label: the previous stage's segmentation as one-hot maps. For training, every
case's map is the previous stage's prediction from the fold that validated the case (``splits.json``), brought into
the cascade's preprocessed grid by the same preprocessing as the training data (`preprocess_case` with the
prediction as the label) and stored as ``preprocessed/<ds>/<configuration>_prev_stage/<case>.npy`` (uint8/uint16,
the spatial shape of the case's stored seg; 0 outside the image's nonzero region). At inference the previous stage
is predicted first (`autoseg.inference.predictor.Predictor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

from autoseg.data.dataset import list_cases as raw_cases
from autoseg.data.dataset import load_dataset
from autoseg.data.image_io import read_image, read_label
from autoseg.data.splits import load_or_create_splits
from autoseg.errors import ConfigError, DatasetError
from autoseg.fingerprint.fingerprint import DatasetFingerprint
from autoseg.log import logger, progress
from autoseg.planning.plans import Configuration, Plans
from autoseg.preprocessing.cascade import convert_case
from autoseg.preprocessing.storage import list_cases
from autoseg.serialization import atomic_write, load_json, save_json
from autoseg.workspace import Workspace

SOURCE_FILE = ".source.json"  # which plans / trainer / previous stage the maps were made from
SEQUENTIAL_BELOW = 8  # fewer cases than this are converted in this process (no worker start-up)


def prev_stage_folder(ws: Workspace, dataset: str, conf: Configuration) -> Path:
    """``preprocessed/<dataset>/<configuration>_prev_stage``: one ``<case>.npy`` label map per case."""
    return ws.preprocessed_dataset(dataset) / f"{conf.name}_prev_stage"


def prediction_sources(
    ws: Workspace, dataset: str, plans: Plans, conf: Configuration, trainer: str, case_ids: Sequence[str]
):
    """(case -> the previous stage's validation prediction of the fold that validated it, missing files)."""

    ending = DatasetFingerprint.load(ws.fingerprint_file(dataset)).file_ending
    splits_path = ws.splits_file(dataset)
    if not splits_path.is_file():
        raise ConfigError(missing_text(conf, [splits_path]))
    splits = load_or_create_splits(splits_path, case_ids, write=False)
    sources: dict[str, Path] = {}
    for k, split in enumerate(splits):
        val = ws.run(dataset, plans.name, conf.previous_stage, trainer, k).validation
        for cid in split["val"]:
            sources.setdefault(cid, val / f"{cid}{ending}")
    missing = [sources.get(cid, Path(f"<no fold validates {cid}>")) for cid in case_ids]
    return sources, [p for p in missing if not p.is_file()]


def missing_text(conf: Configuration, missing: Sequence[Path], dataset: str = "<dataset>") -> str:
    shown = ", ".join(str(p) for p in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return (
        f"configuration {conf.name!r} is a cascade stage and needs the cross-validation predictions of "
        f"{conf.previous_stage!r}; missing: {shown}. Train `autoseg train -d {dataset} -c {conf.previous_stage} "
        "-f 0..4` first"
    )


def missing_predictions(ws: Workspace, dataset: str, plans: Plans, conf: Configuration, trainer: str) -> list[Path]:
    """The previous stage's validation predictions that a cascade fold still needs (empty: ready to train)."""
    cases = list_cases(ws.preprocessed_config(dataset, conf.data_identifier))
    try:
        return prediction_sources(ws, dataset, plans, conf, trainer, cases)[1]
    except ConfigError:
        return [ws.splits_file(dataset)]


def _convert_one(
    raw_case,
    pred_path: Path,
    plans: Plans,
    conf: Configuration,
    fingerprint: DatasetFingerprint | None,
    out: Path,
    stored_shape,
) -> str:
    """Worker task: preprocess one case with its prediction as label; write the label map atomically."""

    image, geometry = read_image(raw_case.images, check_integrity=False)
    prediction, _ = read_label(pred_path)
    if prediction.shape != image.shape[1:]:
        raise DatasetError(f"{pred_path}: shape {prediction.shape} differs from its image's {image.shape[1:]}")
    _, seg = convert_case(image, prediction, geometry, plans, conf, fingerprint, raw_case.case_id)
    if seg.shape != tuple(stored_shape):
        raise DatasetError(
            f"{pred_path}: preprocessed to shape {seg.shape}, but the stored case has {tuple(stored_shape)}; "
            "preprocess the data again (`autoseg preprocess --overwrite`)"
        )
    atomic_write(out, lambda fh: np.save(fh, seg), fsync=False)
    return raw_case.case_id


def build_prev_stage(
    ws: Workspace, dataset: str, plans: Plans, conf: Configuration, plans_name: str, trainer: str, jobs: int = 2
) -> Path:
    """Write every case's previous-stage map into `prev_stage_folder` (resumable); returns the folder.

    A case is skipped when its map is newer than its prediction and was made from the same plans / trainer.
    """
    if conf.previous_stage is None:
        raise ConfigError(f"configuration {conf.name!r} is not a cascade stage (no previous_stage)")
    data_folder = ws.preprocessed_config(dataset, conf.data_identifier)
    cases = list_cases(data_folder)
    if not cases:
        raise ConfigError(f"{data_folder}: no preprocessed cases; run `autoseg preprocess -d {dataset}` first")
    sources, missing = prediction_sources(ws, dataset, plans, conf, trainer, cases)
    if missing:
        raise ConfigError(missing_text(conf, missing, dataset))
    folder = prev_stage_folder(ws, dataset, conf)
    marker = {"plans": plans_name, "trainer": trainer, "previous_stage": conf.previous_stage}
    same_source = (folder / SOURCE_FILE).is_file() and load_json(folder / SOURCE_FILE) == marker
    todo = [
        c
        for c in cases
        if not (same_source and (folder / f"{c}.npy").is_file())
        or (folder / f"{c}.npy").stat().st_mtime_ns < sources[c].stat().st_mtime_ns
    ]
    if not todo:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    if not same_source:  # maps of other plans / trainer: removed first, so a killed rebuild resumes correctly
        for old in folder.glob("*.npy"):
            old.unlink()
        save_json(folder / SOURCE_FILE, marker)
    by_id = {c.case_id: c for c in raw_cases(load_dataset(ws.raw_dataset(dataset)))[0]}
    absent = [c for c in todo if c not in by_id]
    if absent:
        raise DatasetError(f"{ws.raw_dataset(dataset)}: raw images of {', '.join(absent[:5])} not found")
    fp = DatasetFingerprint.load(ws.fingerprint_file(dataset))
    tasks = []
    for c in todo:
        shape = np.load(data_folder / f"{c}_seg.npy", mmap_mode="r").shape[1:]
        tasks.append(delayed(_convert_one)(by_id[c], sources[c], plans, conf, fp, folder / f"{c}.npy", shape))
    logger.info(f"{conf.name}: {conf.previous_stage} predictions of {len(todo)} case(s) -> {folder}")
    n_jobs = 1 if len(tasks) < SEQUENTIAL_BELOW else max(1, min(int(jobs), len(tasks)))
    if n_jobs == 1:
        results = (fn(*a, **kw) for fn, a, kw in tasks)
    else:
        results = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator_unordered")(tasks)
    for _ in progress(results, total=len(tasks), desc=f"{conf.name} inputs", unit="case"):
        pass
    return folder


def check_prev_stage(folder: Path, case_ids: Sequence[str]) -> None:
    """Raise ConfigError naming `folder` if a case's previous-stage map is missing."""
    missing = [c for c in case_ids if not (folder / f"{c}.npy").is_file()]
    if missing:
        raise ConfigError(f"{folder}: previous-stage maps of {', '.join(missing[:5])} are missing")
