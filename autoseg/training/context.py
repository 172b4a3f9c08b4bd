"""What a fold's training needs to know besides the train config: data folder, cases, labels, run folder, device."""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from autoseg.errors import ConfigError
from autoseg.log import logger
from autoseg.training import distributed as D
from autoseg.training.checkpoint import load_checkpoint
from autoseg.training.config import TrainConfig, config_from_dict
from autoseg.training.distributed import DistInfo


@dataclass(frozen=True)
class FoldContext:
    ws: object  # Workspace
    dataset: str
    plans: object  # Plans
    configuration: object  # Configuration
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

    @property
    def header(self) -> str:
        return (
            f"# {self.dataset} plans={self.plans.name} configuration={self.configuration.name} "
            f"trainer={self.trainer_name} fold={self.fold} train={len(self.train_ids)} val={len(self.val_ids)} "
            f"host={socket.gethostname()} torch={torch.__version__}"
        )


def resolve_device(name: str | None) -> torch.device:
    """'cuda' | 'cpu' | 'cuda:1' | None (CUDA when available)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu, "
            "or leave --device out to use CUDA only when it is available"
        )
    if not (name == "cpu" or name.startswith("cuda")):
        raise ConfigError(f"--device {name!r}: use cpu or cuda")
    return torch.device(name)


def fold_context(
    ws,
    dataset: str,
    plans,
    configuration_name: str,
    fold,
    trainer_name: str,
    group_by: str | None = None,
    write: bool = True,
) -> FoldContext:
    from autoseg.data.splits import fold_cases, load_or_create_splits
    from autoseg.fingerprint.fingerprint import DatasetFingerprint
    from autoseg.preprocessing.storage import list_cases

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
    values = sorted(set(fp.labels.values()))
    labels = tuple(v for v in values if v != 0)
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
        max(values) + 1,
        len(conf.normalization) + (len(labels) if prev is not None else 0),
        fp.file_ending,
        prev,
    )


def _prev_stage(ws, dataset: str, plans, conf, trainer_name: str, cases, write: bool) -> Path:
    """The cascade's previous-stage folder: built by the main process (`write`), checked by the others."""
    from autoseg.training import cascade

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
    if not resume:
        if (run_dir / "checkpoint_latest.pt").is_file():
            raise ConfigError(f"{run_dir} already holds a training run; continue it with --resume or delete the folder")
        return None, cfg
    for name in ("checkpoint_latest.pt", "checkpoint_final.pt"):
        if (run_dir / name).is_file():
            ckpt = load_checkpoint(run_dir / name)
            return ckpt, resume_config(ckpt, cfg, run_dir / name)
    logger.info(f"--resume: no checkpoint in {run_dir}, starting from scratch")
    return None, cfg
