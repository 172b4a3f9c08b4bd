"""What a fold's training needs to know besides the train config: data folder, cases, labels, run folder, device."""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from autoseg.data.labels import LabelScheme
from autoseg.data.splits import fold_cases, load_or_create_splits
from autoseg.device import resolve_device
from autoseg.errors import ConfigError
from autoseg.fingerprint.fingerprint import DatasetFingerprint
from autoseg.log import logger
from autoseg.planning.plans import Configuration, Plans
from autoseg.preprocessing.storage import list_cases
from autoseg.training import cascade
from autoseg.training import distributed as D
from autoseg.training.checkpoint import load_checkpoint
from autoseg.training.config import TrainConfig, config_from_dict
from autoseg.training.distributed import DistInfo
from autoseg.workspace import RunFolder, Workspace


@dataclass(frozen=True)
class FoldContext:
    ws: Workspace
    dataset: str
    plans: Plans
    configuration: Configuration
    fold: int | str
    trainer_name: str
    run_dir: Path
    data_folder: Path
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    foreground_labels: tuple[int, ...]
    num_classes: int
    in_channels: int  # network input: image channels (+ one per foreground label for a cascade stage)
    file_ending: str
    prev_stage_folder: Path | None = None  # cascade: the previous stage's maps (autoseg.training.cascade)
    scheme: LabelScheme | None = None  # classes or regions, ignore label (None: plain labels 0..num_classes-1)

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.run_dir)

    @property
    def header(self) -> str:
        return (
            f"# {self.dataset} plans={self.plans.name} configuration={self.configuration.name} "
            f"trainer={self.trainer_name} fold={self.fold} train={len(self.train_ids)} val={len(self.val_ids)} "
            f"host={socket.gethostname()} torch={torch.__version__}"
        )


def fold_context(
    ws: Workspace,
    dataset: str,
    plans: Plans,
    configuration_name: str,
    fold,
    trainer_name: str,
    group_by: str | None = None,
    write: bool = True,
) -> FoldContext:
    conf = plans.configuration(configuration_name)
    folder = ws.preprocessed_config(dataset, conf.data_identifier)
    cases = list_cases(folder)
    if not cases:
        raise ConfigError(
            f"{folder}: no preprocessed cases; run `autoseg preprocess -d {dataset} -c {conf.name}` first"
        )
    splits = load_or_create_splits(ws.splits_file(dataset), cases, group_by, write=write)
    train_ids, val_ids = fold_cases(splits, fold, cases)
    fp = DatasetFingerprint.load(ws.fingerprint_file(dataset))
    scheme = fp.scheme
    labels = scheme.foreground_labels
    if scheme.has_regions and conf.previous_stage:
        raise ConfigError(f"{conf.name}: a cascade stage cannot be trained on a dataset with regions")
    prev = _prev_stage(ws, dataset, plans, conf, trainer_name, cases, write) if conf.previous_stage else None
    return FoldContext(
        ws,
        dataset,
        plans,
        conf,
        fold,
        trainer_name,
        ws.run_dir(dataset, plans.name, conf.name, trainer_name, fold),
        folder,
        tuple(train_ids),
        tuple(val_ids),
        labels,
        scheme.num_outputs,
        len(conf.normalization) + (len(labels) if prev is not None else 0),
        fp.file_ending,
        prev,
        scheme,
    )


def _prev_stage(
    ws: Workspace, dataset: str, plans: Plans, conf: Configuration, trainer_name: str, cases, write: bool
) -> Path:
    """The cascade's previous-stage folder: built by the main process (`write`), checked by the others."""
    missing = cascade.missing_predictions(ws, dataset, plans, conf, trainer_name)
    if missing:  # every rank raises the same error (no rank waits at the barrier below for nothing)
        raise ConfigError(cascade.missing_text(conf, missing, dataset))
    if write:
        folder = cascade.build_prev_stage(ws, dataset, plans, conf, plans.name, trainer_name)
    else:
        folder = cascade.prev_stage_folder(ws, dataset, conf)
    D.barrier(D.env_info())  # DDP: the other ranks wait for the main rank's maps
    cascade.check_prev_stage(folder, cases)
    return folder


def resume_config(ckpt: dict, given: TrainConfig, where: Path) -> TrainConfig:
    """The saved config with every setting the user changed from the default (e.g. --set epochs=N) applied."""
    saved = config_from_dict(ckpt["train_config"], str(where))
    default = TrainConfig()
    changes = {
        f.name: getattr(given, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(given, f.name) != getattr(default, f.name) and getattr(given, f.name) != getattr(saved, f.name)
    }
    if changes:
        logger.info(f"resume: changed settings {changes}")
    done = int(ckpt["epoch"])
    cfg = dataclasses.replace(saved, **changes)
    if cfg.epochs < done:
        raise ConfigError(f"{where}: the run already did {done} epochs; --set epochs={cfg.epochs} cannot shorten it")
    return cfg


def setup_runtime(device: str | None, deterministic: bool) -> tuple[torch.device, DistInfo]:
    """Device of this process (its GPU under torchrun), process group, determinism flags."""
    info = D.env_info()
    dev = D.rank_device(info, resolve_device(device))
    D.init(info, dev)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev, info


def find_resume_state(run_dir: Path, cfg: TrainConfig, resume: bool) -> tuple[dict | None, TrainConfig]:
    """(checkpoint to continue from or None, train config to use); refuses to overwrite a run without --resume."""
    run = RunFolder(run_dir)
    if not resume:
        if run.latest.is_file():
            raise ConfigError(f"{run_dir} already holds a training run; continue it with --resume or delete the folder")
        return None, cfg
    for path in (run.latest, run.final):
        if path.is_file():
            ckpt = load_checkpoint(path)
            return ckpt, resume_config(ckpt, cfg, path)
    logger.info(f"--resume: no checkpoint in {run_dir}, starting from scratch")
    return None, cfg
