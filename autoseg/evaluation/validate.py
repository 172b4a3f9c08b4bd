"""End-of-fold validation: full-volume sliding-window prediction of the fold's validation cases.

For every validation case: predict the preprocessed volume (step 0.5, Gaussian weighting, mirror TTA unless
``val_tta`` is off; a 2d configuration predicts slice by slice), restore the probabilities to the raw grid, write the
argmax as ``fold_k/validation/<case><file_ending>`` in the original geometry, save the probabilities as
``<case>.npz`` (key "probabilities", float16, raw grid) for ensembling, and score against
``preprocessed/<dataset>/gt_segmentations``: ``fold_k/validation/metrics_per_case.csv`` and ``summary.json``.
A cascade stage's case gets its previous-stage map (the cross-validation prediction) as one-hot extra channels.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from autoseg.log import logger, progress
from autoseg.serialization import atomic_write_bytes


def predict_logits(
    model: torch.nn.Module, data: np.ndarray, configuration, step: float, tta: bool, device: torch.device
) -> torch.Tensor:
    """Logits (K, Z, Y, X) of a preprocessed case (C, Z, Y, X); a 2d configuration predicts slice by slice."""
    from autoseg.inference.sliding_window import sliding_window_logits

    image = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    mirror = tuple(range(configuration.ndim)) if tta else ()
    return sliding_window_logits(model, image, configuration.patch_size, step=step, mirror_axes=mirror, device=device)


def save_probabilities(path: Path, probs: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, probabilities=probs.astype(np.float16))
    atomic_write_bytes(path, buf.getvalue())


def predict_case(model, fc, cfg, case_id: str, out_dir: Path, device: torch.device) -> Path:
    """Predict one validation case, write its segmentation (and probabilities); returns the segmentation path."""
    from autoseg.inference.export import restore_probabilities, write_segmentation
    from autoseg.preprocessing.storage import load_case

    case = load_case(fc.data_folder, case_id, mmap=False, with_locations=False)
    data = case.data
    if fc.prev_stage_folder is not None:
        from autoseg.training.cascade import with_prev_stage

        data = with_prev_stage(data, fc.prev_stage_folder, case_id, fc.foreground_labels)
    logits = predict_logits(model, data, fc.configuration, cfg.val_step, cfg.val_tta, device)
    probs = torch.softmax(logits.float(), 0).cpu().numpy()
    raw = restore_probabilities(probs, case.properties, fc.configuration)
    labels = np.argmax(raw, 0).astype(np.uint8 if raw.shape[0] < 256 else np.uint16)
    seg_path = out_dir / f"{case_id}{fc.file_ending}"
    write_segmentation(seg_path, labels, case.properties.geometry)
    if cfg.save_probabilities:
        save_probabilities(out_dir / f"{case_id}.npz", raw)
    return seg_path


def validate_fold(model: torch.nn.Module, fc, cfg, device: torch.device) -> dict:
    """Predict all validation cases of the fold and write validation/summary.json; returns the summary."""
    from autoseg.evaluation.metrics import evaluate_folder, save_evaluation

    out_dir = fc.run_dir / "validation"
    out_dir.mkdir(parents=True, exist_ok=True)
    was_ds = getattr(model, "deep_supervision", False)
    model.deep_supervision = False
    model.eval()
    try:
        with torch.no_grad():
            for cid in progress(fc.val_ids, desc=f"validation fold {fc.fold}", unit="case"):
                predict_case(model, fc, cfg, cid, out_dir, device)
    finally:
        model.deep_supervision = was_ds
    gt = fc.ws.gt_folder(fc.dataset)
    df, summary = evaluate_folder(gt, out_dir, fc.foreground_labels, fc.file_ending, jobs=1, case_ids=list(fc.val_ids))
    save_evaluation(df, summary, out_dir)  # metrics_per_case.csv and summary.json
    logger.info(f"fold {fc.fold} validation: {len(fc.val_ids)} cases, mean Dice {summary['mean_dice']:.4f}")
    return summary
