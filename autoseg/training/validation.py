"""End-of-fold validation: the fold's validation cases predicted on the same road as `autoseg predict`.

For every validation case the stored preprocessed volume (plus, for a cascade stage, its previous-stage map as
one-hot channels) goes through `Predictor.preprocessed_output` (sliding window, step ``val_step``, Gaussian
weighting, mirror TTA unless ``val_tta`` is off; a 2d configuration predicts slice by slice) and an `ExportJob`
(`inference.exporter.export_case`: back to the raw grid, argmax, the segmentation ``fold_k/validation/<case><ending>``
in the original geometry, the probabilities ``<case>.npz`` for ensembling). The cases are then scored against
``preprocessed/<dataset>/gt_segmentations``: ``metrics_per_case.csv`` and ``summary.json``. Model selection and its
postprocessing decisions are therefore made on exactly what `predict` produces for these cases.
"""

from __future__ import annotations

import torch

from autoseg.evaluation.metrics import evaluate_folder, save_evaluation
from autoseg.fingerprint.describe import describe_dataset
from autoseg.inference.exporter import ExportJob, export_case
from autoseg.inference.predictor import Predictor
from autoseg.inference.source import ModelSource
from autoseg.log import logger, progress
from autoseg.preprocessing.cascade import with_prev_stage
from autoseg.preprocessing.storage import load_case
from autoseg.training.config import TrainConfig
from autoseg.training.context import FoldContext


def fold_predictor(model: torch.nn.Module, fc: FoldContext, cfg: TrainConfig, device: torch.device) -> Predictor:
    """A Predictor of the fold's configuration that runs `model` (the network just trained) with the validation
    settings of `cfg`."""
    described = describe_dataset(fc.ws, fc.dataset)
    source = ModelSource(
        fc.dataset, fc.plans, described.labels, described.channel_names, described.file_ending,
        {fc.configuration.name: {fc.fold: fc.run.final}}, None, fc.run_dir,
        regions_class_order=described.regions_class_order,
    )  # fmt: skip
    return Predictor(source, fc.configuration.name, [fc.fold], device, cfg.val_step, cfg.val_tta, models=[model])


def validate_fold(model: torch.nn.Module, fc: FoldContext, cfg: TrainConfig, device: torch.device) -> dict:
    """Predict all validation cases of the fold and write validation/summary.json; returns the summary."""
    out_dir = fc.run.validation
    out_dir.mkdir(parents=True, exist_ok=True)
    was_ds = getattr(model, "deep_supervision", False)
    model.deep_supervision = False
    model.eval()
    predictor = fold_predictor(model, fc, cfg, device)
    scheme = predictor.source.scheme
    try:
        with torch.no_grad():
            for cid in progress(fc.val_ids, desc=f"validation fold {fc.fold}", unit="case"):
                case = load_case(fc.data_folder, cid, mmap=False, with_locations=False)
                data = case.data
                if fc.prev_stage_folder is not None:
                    data = with_prev_stage(data, fc.prev_stage_folder, cid, fc.foreground_labels)
                output = predictor.preprocessed_output(data, case.properties)
                npz = out_dir / f"{cid}.npz" if cfg.save_probabilities else None
                target = out_dir / f"{cid}{fc.file_ending}"
                export_case(ExportJob(cid, [output], case.properties.geometry, target, npz, scheme=scheme))
    finally:
        model.deep_supervision = was_ds
    gt = fc.ws.gt_folder(fc.dataset)
    df, summary = evaluate_folder(
        gt, out_dir, scheme.classes, fc.file_ending, jobs=1, case_ids=list(fc.val_ids), ignore_label=scheme.ignore_label
    )
    save_evaluation(df, summary, out_dir)  # metrics_per_case.csv and summary.json
    logger.info(f"fold {fc.fold} validation: {len(fc.val_ids)} cases, mean Dice {summary['mean_dice']:.4f}")
    return summary
