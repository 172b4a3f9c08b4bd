"""Segmentation metrics per case and label, and a folder evaluator writing a per-case CSV and a summary JSON.

Per label (an int, or a tuple of ints evaluated as one region) and case, with P = predicted and R = reference voxels:

- ``tp``, ``fp``, ``fn``: voxel counts; ``n_pred``, ``n_ref``; ``volume_pred_ml``, ``volume_ref_ml`` (voxels x voxel
  volume / 1000, spacing in mm; for 2D images, Z = 1, the z spacing is ignored so the "volume" is area / 1000).
- ``dice`` = 2TP / (2TP + FP + FN) and ``iou`` = TP / (TP + FP + FN).
- ``precision`` = TP / (TP + FP) and ``recall`` = TP / (TP + FN).
- ``hd95``: the larger of the two directed 95th percentiles of the distances (mm) from the surface voxels of one
  mask to the nearest surface voxel of the other (surface voxel = a voxel of the mask with a face neighbour outside).
- ``nsd``: normalised surface Dice at ``tolerance_mm``: the fraction of surface voxels of both masks that lie
  within the tolerance of the other mask's surface (Nikolov et al. 2021, voxel-count version).

NaN rules (a NaN is left out of the means; an inf enters them and makes the mean inf):

- both masks empty: dice, iou, precision, recall, hd95 and nsd are NaN (nothing to score, as in nnU-Net).
- prediction empty, reference not: dice = iou = recall = nsd = 0, precision NaN (0/0), hd95 = inf.
- reference empty, prediction not: dice = iou = precision = nsd = 0, recall NaN (0/0), hd95 = inf.

Surface distances are computed on the bounding box of P | R only (with spacing-aware Euclidean distance transforms).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy import ndimage

from autoseg.data.image_io import file_ending, read_header, read_label, supported_endings
from autoseg.data.nifti import check_nifti
from autoseg.errors import DatasetError, ImageIOError, problems_error
from autoseg.log import progress
from autoseg.serialization import atomic_write_text

Label = int | tuple[int, ...]
METRICS = tuple("dice iou precision recall hd95 nsd volume_ref_ml volume_pred_ml tp fp fn n_ref n_pred".split())
CSV_NAME, SUMMARY_NAME = "metrics_per_case.csv", "summary.json"


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    idx = [np.flatnonzero(mask.any(axis=tuple(j for j in range(mask.ndim) if j != i))) for i in range(mask.ndim)]
    return tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of `mask` with at least one face neighbour outside it (array borders count as outside)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure, border_value=0)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of `pred` to the surface of `ref`, and from `ref`'s to `pred`'s.

    Both masks must be non-empty boolean arrays of the same shape; only their joint bounding box is processed.
    """
    box = _bbox(pred | ref)
    p, r = pred[box], ref[box]
    sp, sr = _surface(p), _surface(r)
    to_ref = ndimage.distance_transform_edt(~sr, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return to_ref[sp], to_pred[sr]


def _surface_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float) -> dict:
    if not pred.any() and not ref.any():
        return {"hd95": math.nan, "nsd": math.nan}
    if not pred.any() or not ref.any():
        return {"hd95": math.inf, "nsd": 0.0}
    d_pr, d_rp = surface_distances(pred, ref, spacing)
    hd95 = max(float(np.percentile(d_pr, 95)), float(np.percentile(d_rp, 95)))
    within = np.count_nonzero(d_pr <= tolerance_mm) + np.count_nonzero(d_rp <= tolerance_mm)
    return {"hd95": hd95, "nsd": within / (d_pr.size + d_rp.size)}


def _as_2d(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]):
    """2D images stored as (1, Y, X): drop the pseudo z axis so surfaces and volumes are in-plane."""
    if pred.ndim == 3 and pred.shape[0] == 1:
        return pred[0], ref[0], tuple(float(s) for s in spacing[1:])
    return pred, ref, tuple(float(s) for s in spacing)


def label_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 1.0) -> dict:
    """All metrics of one binary mask pair (see the module docstring for definitions and NaN rules)."""
    pred, ref, spacing = _as_2d(np.asarray(pred, bool), np.asarray(ref, bool), spacing)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {spacing} does not match a {pred.ndim}D array")
    tp = int(np.count_nonzero(pred & ref))
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    fp, fn = n_pred - tp, n_ref - tp
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out = {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        **_surface_metrics(pred, ref, spacing, tolerance_mm),
        "volume_ref_ml": n_ref * voxel_ml,
        "volume_pred_ml": n_pred * voxel_ml,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n_ref": n_ref,
        "n_pred": n_pred,
    }
    return out


def _mask(seg: np.ndarray, label: Label) -> np.ndarray:
    return np.isin(seg, label) if isinstance(label, tuple) else seg == label


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    labels: Sequence[Label],
    spacing: Sequence[float],
    tolerance_mm: float = 1.0,
    ignore_label: int | None = None,
) -> dict:
    """{label: {metric: value}} for label maps `pred` and `ref` of equal shape; `spacing` in array order (mm).
    Voxels where `ref` holds `ignore_label` are left out of both masks (their class is unknown)."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if ignore_label is None:
        return {lab: label_metrics(_mask(pred, lab), _mask(ref, lab), spacing, tolerance_mm) for lab in labels}
    valid = ref != ignore_label
    return {
        lab: label_metrics(_mask(pred, lab) & valid, _mask(ref, lab) & valid, spacing, tolerance_mm) for lab in labels
    }


def _label_key(label: Label) -> str:
    return str(label) if isinstance(label, int) else ",".join(str(v) for v in label)


def _evaluate_case(
    case_id: str, ref_path: Path, pred_path: Path, labels, tolerance_mm: float, ignore_label: int | None = None
) -> list[dict]:
    ref, geo = read_label(ref_path)
    pred, _ = read_label(pred_path)
    if pred.shape != ref.shape:
        raise ImageIOError(f"{pred_path}: shape {pred.shape} differs from the reference {ref_path} {ref.shape}")
    for path, arr in ((ref_path, ref), (pred_path, pred)):
        if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
            raise ImageIOError(f"{path}: label map holds non-integer values; labels must be integers")
    per_label = case_metrics(pred, ref, labels, geo.spacing, tolerance_mm, ignore_label)
    return [{"case": case_id, "label": _label_key(lab), **m} for lab, m in per_label.items()]


def unpredicted(ref_dir, pred_dir) -> list[Path]:
    """Reference label files without a prediction file of the same name (evaluation refuses these)."""
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    if not ref_dir.is_dir() or not pred_dir.is_dir():
        return []
    refs = [p for p in sorted(ref_dir.iterdir()) if p.name.lower().endswith(supported_endings())]
    return [p for p in refs if not p.name.startswith(".") and not (pred_dir / p.name).is_file()]


def _label_header(path: Path, what: str) -> tuple[int, ...] | str:
    """The shape (Z, Y, X) of a label map from its header, or what is wrong with the file: missing, empty, corrupt
    or truncated (NIfTI: `check_nifti`), not 2D/3D, invalid geometry, more than one component per pixel."""
    if not path.is_file() and not path.is_symlink():
        return f"{path}: {what} missing (no such file)"
    try:
        shape, components, _ = read_header(path)
        if path.name.lower().endswith((".nii", ".nii.gz")):
            check_nifti(path)
    except ImageIOError as exc:
        return str(exc)
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror or exc})"
    if components != 1:
        return f"{path}: a label map must have one component per pixel, found {components}"
    return shape


def evaluation_problems(ref_dir, pred_dir, case_ids: Sequence[str], ending: str) -> list[str]:
    """Every problem of the prediction and reference files of `case_ids` (CASE`ending` in each folder), one "PATH:
    what is wrong" line each, found from the headers (and the NIfTI integrity check) without decoding voxel data:
    missing, empty, unreadable, corrupt or truncated files, label maps with more than one component per pixel and
    predictions whose shape differs from their reference's. Empty when every pair can be scored."""
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    problems = []
    for cid in case_ids:
        pred_path, ref_path = pred_dir / f"{cid}{ending}", ref_dir / f"{cid}{ending}"
        pred, ref = _label_header(pred_path, "prediction"), _label_header(ref_path, "reference")
        problems += [h for h in (pred, ref) if isinstance(h, str)]
        if not isinstance(pred, str) and not isinstance(ref, str) and pred != ref:
            problems.append(f"{pred_path}: shape {pred} differs from the reference {ref_path} {ref}")
    return problems


def folder_problems(ref_dir, pred_dir) -> list[str]:
    """What `autoseg evaluate` checks before scoring anything: every reference file without a prediction of the same
    name, and the `evaluation_problems` of every prediction of the folder's most common image ending (the files that
    are scored) and its reference. Empty when a folder does not exist or holds no image (the caller names that)."""
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    if not ref_dir.is_dir() or not pred_dir.is_dir():
        return []
    problems = [
        f"{p}: reference has no prediction ({pred_dir / p.name} does not exist); predict every case, or point -r at "
        "a folder holding only the predicted cases"
        for p in unpredicted(ref_dir, pred_dir)
    ]
    endings = Counter(file_ending(p) for p in pred_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    found = [e for e, _ in endings.most_common() if e in supported_endings()]
    if found:
        ending = found[0]
        ids = sorted(p.name[: -len(ending)] for p in pred_dir.glob(f"*{ending}") if not p.name.startswith("."))
        problems += evaluation_problems(ref_dir, pred_dir, ids, ending)
    return problems


def _case_ids(pred_dir: Path, file_ending: str, case_ids: Sequence[str] | None) -> list[str]:
    if case_ids is None:
        case_ids = sorted(
            p.name[: -len(file_ending)] for p in pred_dir.glob(f"*{file_ending}") if not p.name.startswith(".")
        )
        if not case_ids:
            raise DatasetError(f"{pred_dir}: no predictions ending in {file_ending!r} to evaluate")
    return list(case_ids)


def _case_rows(
    case_id: str, ref_path: Path, pred_path: Path, labels, tolerance_mm: float, ignore_label: int | None = None
) -> list[dict] | str:
    """`_evaluate_case`, or the problem found while reading the pair (e.g. non-integer labels), so that every such
    problem of a folder is named at the end instead of the first one stopping the run."""
    try:
        return _evaluate_case(case_id, ref_path, pred_path, labels, tolerance_mm, ignore_label)
    except ImageIOError as exc:
        return str(exc)


def evaluate_folder(
    ref_dir,
    pred_dir,
    labels: Sequence[Label],
    file_ending: str,
    jobs: int = 2,
    case_ids: Sequence[str] | None = None,
    tolerance_mm: float = 1.0,
    ignore_label: int | None = None,
):
    """Score every prediction in `pred_dir` (or the given `case_ids`) against `ref_dir` -> (DataFrame, summary).

    The DataFrame has one row per case and label (columns ``case``, ``label`` and METRICS); the summary holds
    ``mean`` ({label: {metric: mean over cases, NaN skipped}}), ``foreground_mean`` ({metric: mean of the per-label
    means, label 0 excluded}), ``mean_dice`` (= foreground_mean["dice"]), ``num_cases``, ``labels``, ``tolerance_mm``.
    Raises one DatasetError naming every bad file: first every missing, unreadable or mismatched one
    (`evaluation_problems`, before any case is scored), then every one found while scoring (e.g. non-integer labels).
    `labels` may hold regions (tuples of values); voxels where the reference holds `ignore_label` are not scored.
    """
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    ids = _case_ids(pred_dir, file_ending, case_ids)
    if problems := evaluation_problems(ref_dir, pred_dir, ids, file_ending):
        raise problems_error(problems)  # every missing, unreadable or mismatched file, before any case is scored
    labels = [tuple(lab) if isinstance(lab, (list, tuple)) else int(lab) for lab in labels]
    args = [
        (c, ref_dir / f"{c}{file_ending}", pred_dir / f"{c}{file_ending}", labels, tolerance_mm, ignore_label)
        for c in ids
    ]
    if jobs <= 1 or len(ids) <= 1:
        rows = [_case_rows(*a) for a in progress(args, desc="evaluate", unit="case")]
    else:
        gen = Parallel(n_jobs=jobs, return_as="generator")(delayed(_case_rows)(*a) for a in args)
        rows = list(progress(gen, total=len(args), desc="evaluate", unit="case"))
    if problems := [r for r in rows if isinstance(r, str)]:
        raise problems_error(problems)  # found while reading the voxels (e.g. non-integer labels); nothing written
    df = pd.DataFrame([r for case_rows in rows for r in case_rows], columns=["case", "label", *METRICS])
    return df, summarize(df, labels, tolerance_mm)


def summarize(df, labels: Sequence[Label], tolerance_mm: float) -> dict:
    """Per-label means over cases (NaN skipped) and their mean over foreground labels."""
    keys = [_label_key(lab) for lab in labels]
    mean = {k: {m: float(df.loc[df["label"] == k, m].mean()) for m in METRICS} for k in keys}
    fg = [k for lab, k in zip(labels, keys) if lab != 0]
    fg_mean = {m: float(np.mean([mean[k][m] for k in fg])) if fg else math.nan for m in METRICS}
    return {
        "num_cases": int(df["case"].nunique()),
        "labels": keys,
        "tolerance_mm": float(tolerance_mm),
        "mean_dice": fg_mean["dice"],
        "foreground_mean": fg_mean,
        "mean": mean,
    }


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def save_evaluation(df, summary: dict, out_dir) -> tuple[Path, Path]:
    """Write ``metrics_per_case.csv`` (NaN as "nan", inf as "inf") and ``summary.json`` (NaN as null, inf as "inf")."""
    out_dir = Path(out_dir)
    csv_path, json_path = out_dir / CSV_NAME, out_dir / SUMMARY_NAME
    atomic_write_text(csv_path, df.to_csv(index=False, na_rep="nan"))
    atomic_write_text(json_path, json.dumps(_json_safe(summary), indent=2, allow_nan=False) + "\n")
    return csv_path, json_path


def summary_table(summary: dict, metrics: Sequence[str] = ("dice", "iou", "hd95", "nsd")) -> str:
    """A plain-text table of the per-label means and the foreground mean (for the CLI to print)."""
    rows = [("label", *metrics)]
    rows += [(k, *(f"{v[m]:.4f}" for m in metrics)) for k, v in summary["mean"].items()]
    rows.append(("fg mean", *(f"{summary['foreground_mean'][m]:.4f}" for m in metrics)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)
