"""The trainer: builds network, loss, optimizer and loaders from the plans, runs the epochs, checkpoints, resumes.

Customise by subclassing and overriding one ``build_*`` method, then register the class::

    from autoseg.training.trainer import Trainer, trainers

    @trainers.register("adamw_small_lr")
    class MyTrainer(Trainer):
        def build_optimizer(self, model):
            return torch.optim.AdamW(model.parameters(), lr=3e-4)

and train with ``autoseg train -d 4 --trainer adamw_small_lr --plugin my_module``. Keyword arguments of a trainer's
``__init__`` beyond autoseg's (fc, cfg, device, num_workers, deterministic) come from ``--set trainer_kwargs.KEY=V``.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autoseg.data.labels import class_key
from autoseg.errors import ConfigError
from autoseg.log import logger
from autoseg.networks.build import build_network
from autoseg.planning.plans import Plans
from autoseg.registry import Registry, imported_plugins
from autoseg.serialization import load_json, remove_stale_temps
from autoseg.training import distributed as D
from autoseg.training import progress as P
from autoseg.training import step_options as S
from autoseg.training.checkpoint import capture_rng, restore_rng, save_checkpoint
from autoseg.training.config import TrainConfig, save_train_config
from autoseg.training.context import FoldContext, find_resume_state, fold_context, setup_runtime
from autoseg.training.loader import default_num_workers, make_loaders
from autoseg.training.loop import StepContext, train_epoch, val_epoch
from autoseg.training.losses import DeepSupervisionLoss, build_loss, deep_supervision_weights
from autoseg.training.optim import build_optimizer, scheduled_lr, set_lr
from autoseg.training.pretrained import load_pretrained, set_encoder_frozen
from autoseg.training.validation import validate_fold
from autoseg.workspace import RunFolder, Workspace

trainers: Registry = Registry("trainer")
EpochListener = Callable[[int, P.EpochRecord], None]  # (epoch, its record)


@dataclass(frozen=True)
class FoldResult:
    run_dir: Path
    fold: int | str
    epochs_done: int
    best_ema_dice: float
    final_checkpoint: Path | None
    validation: dict | None  # summary of the end-of-fold validation


@trainers.register("default")
class Trainer:
    def __init__(self, fc: FoldContext, cfg: TrainConfig, device: torch.device, num_workers: int, deterministic: bool):
        self.fc, self.cfg, self.device = fc, cfg, device
        self.num_workers, self.deterministic = num_workers, deterministic
        self.epoch_listeners: list[EpochListener] = []  # called after `on_epoch_end`, on every rank
        self.dist = D.env_info()
        self.amp_dtype = S.autocast_dtype(cfg.amp, cfg.amp_dtype, device)  # None: full precision
        self.amp = self.amp_dtype is not None

    # ---- build_* hooks (override one in a subclass) ----------------------------------------------------------
    def build_network(self) -> torch.nn.Module:
        conf = self.fc.configuration
        return build_network(conf.network, self.fc.in_channels, self.fc.num_classes, self.cfg.deep_supervision)

    def build_loss(self) -> torch.nn.Module:
        conf, cfg = self.fc.configuration, self.cfg
        scheme = self.fc.scheme
        ignore, regions = (scheme.ignore_label, scheme.regions) if scheme is not None else (None, ())
        loss = build_loss(cfg.loss, self.fc.num_classes, conf.batch_dice, ignore, cfg.loss_kwargs, regions)
        if not self.cfg.deep_supervision:
            return loss
        n_outputs = len(self.fc.configuration.network.params["strides"]) - 1
        weights = list(deep_supervision_weights(n_outputs))
        if self.dist.enabled:  # DDP needs a gradient for every head: the lowest one gets a tiny weight, not 0
            weights = [w if w > 0 else 1e-6 for w in weights]
            weights = [w / sum(weights) for w in weights]
        return DeepSupervisionLoss(loss, weights)

    def build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(model, self.cfg)

    def lr_at(self, epoch: int) -> float:
        cfg = self.cfg
        return scheduled_lr(cfg.lr, epoch, cfg.epochs, cfg.poly_exponent, cfg.warmup_epochs)

    def build_loaders(self, start_batches: tuple[int, int] = (0, 0)):
        """(train, val) batch iterators of this rank, seeded by (seed, fold, rank) and started at `start_batches`."""
        conf, cfg, info = self.fc.configuration, self.cfg, self.dist
        global_bs = cfg.batch_size or conf.batch_size
        _, local_bs = D.split_batch(global_bs, info.rank, info.world_size)
        oversample = D.rank_oversampling(global_bs, cfg.oversample_foreground, info.rank, info.world_size)
        fold_num = self.fc.fold if isinstance(self.fc.fold, int) else 1000
        seed = int(np.random.SeedSequence([cfg.seed, fold_num, info.rank]).generate_state(1)[0] % 2**31)
        local_cfg = dataclasses.replace(cfg, seed=seed, oversample_foreground=oversample, batch_size=local_bs)
        return make_loaders(
            self.fc.data_folder,
            self.fc.train_ids,
            self.fc.val_ids,
            self.fc.configuration,
            local_cfg,
            self.num_workers,
            batch_size=local_bs,
            pin_memory=self.device.type == "cuda",
            start_batches=start_batches,
            prev_stage=self.fc.prev_stage_folder,
            prev_stage_labels=self.fc.foreground_labels,
            device=self.device,
            oversample_classes=self.oversample_classes(),
        )

    def oversample_classes(self) -> tuple[tuple[int, ...], ...] | None:
        """What foreground oversampling centres on: the regions, or the labels without the ignore label."""
        scheme = self.fc.scheme
        if scheme is None:
            return None
        return tuple(c if isinstance(c, tuple) else (c,) for c in scheme.classes)

    def dice_keys(self) -> tuple:
        """Names of the pseudo-Dice columns: the foreground labels, or the regions as "1,2"."""
        scheme = self.fc.scheme
        if scheme is None or not scheme.has_regions:
            return self.fc.foreground_labels
        return tuple(class_key(r) for r in scheme.regions)

    def on_epoch_end(self, epoch: int, record: P.EpochRecord) -> None:
        """Hook called after the epoch's checkpoint is written (subclasses may log, stop, ...)."""

    # ---- state -----------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        torch.manual_seed(self.cfg.seed)
        np.random.seed(self.cfg.seed % 2**32)
        random.seed(self.cfg.seed)  # batchgenerators' noise transforms draw from Python's `random`
        S.set_cudnn_benchmark(self.cfg.cudnn_benchmark, self.device, self.deterministic)
        self.memory_format = S.memory_format(self.cfg.channels_last, len(self.fc.configuration.patch_size))
        net = self.build_network().to(self.device, memory_format=self.memory_format)
        self.model = D.wrap_model(net, self.dist, self.device)
        self.optimizer = self.build_optimizer(self.model)
        self.scaler = S.grad_scaler(self.amp_dtype, self.device)
        self.ctx = StepContext(
            S.compiled(self.model, self.cfg.compile),  # the same weights; checkpoints and validation use self.model
            self.build_loss(),
            self.optimizer,
            self.scaler,
            self.device,
            self.amp,
            self.cfg.grad_clip,
            self.fc.num_classes,
            self.dist,
            self.fc.scheme.regions if self.fc.scheme is not None else (),
            self.fc.scheme.ignore_label if self.fc.scheme is not None else None,
            amp_dtype=self.amp_dtype or torch.float16,
            memory_format=self.memory_format,
        )
        self.start_epoch, self.best_ema, self.ema = 0, None, None
        self.curves = P.empty_curves()
        self.loader_positions = (0, 0)

    def state(self, next_epoch: int) -> dict:
        return {
            "model": D.unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "epoch": next_epoch,
            "rng": capture_rng(),
            "ema_dice": self.ema,
            "best_ema_dice": self.best_ema,
            "curves": self.curves,
            "loader_positions": list(self.loader_positions),
            "train_config": dataclasses.asdict(self.cfg),
            "plans_name": self.fc.plans.name,
            "configuration": self.fc.configuration.name,
            "trainer": self.fc.trainer_name,
            "fold": self.fc.fold,
            "num_classes": self.fc.num_classes,
            "in_channels": self.fc.in_channels,
        }

    def load_state(self, ckpt: dict) -> None:
        D.unwrap(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["grad_scaler"])
        self.start_epoch = int(ckpt["epoch"])
        self.ema, self.best_ema = ckpt["ema_dice"], ckpt["best_ema_dice"]
        self.curves = P.truncate(ckpt["curves"], self.start_epoch)
        self.loader_positions = tuple(int(p) for p in ckpt["loader_positions"])
        restore_rng(ckpt["rng"])

    # ---- run -------------------------------------------------------------------------------------------------
    def run(self, resume_from: dict | None = None) -> FoldResult:
        if self.cfg.freeze_encoder_epochs and self.dist.enabled:  # DDP's reducer expects a gradient for every weight
            raise ConfigError("freeze_encoder_epochs is not supported under torchrun (DDP); train on one process")
        self._setup()
        if resume_from is not None:
            self.load_state(resume_from)
            logger.info(f"resuming {self.fc.run_dir} at epoch {self.start_epoch} of {self.cfg.epochs}")
        elif self.cfg.pretrained:
            self.init_from_pretrained()
        if self.dist.is_main:
            save_train_config(self.fc.run.train_config, self.cfg)
            self.fc.plans.with_plugins(imported_plugins()).save(self.fc.run.plans)  # predict imports them again
        loaders = self.build_loaders(self.loader_positions) if self.start_epoch < self.cfg.epochs else None
        try:
            for epoch in range(self.start_epoch, self.cfg.epochs):
                self._epoch(epoch, loaders)
        finally:
            _close(loaders)
        return self._finish()

    def init_from_pretrained(self) -> None:
        """Initialise the network from `cfg.pretrained` (fine-tuning) and log what was loaded, adapted, re-set."""
        conf = self.fc.configuration
        net = D.unwrap(self.model)
        report = load_pretrained(net, self.cfg.pretrained, conf.name, self.fc.num_classes, conf.network.name)
        for line in report.lines():
            logger.info(line)

    def _epoch(self, epoch: int, loaders) -> None:
        if self.cfg.freeze_encoder_epochs:
            frozen = epoch < self.cfg.freeze_encoder_epochs
            set_encoder_frozen(D.unwrap(self.model), frozen)
            if epoch in (0, self.cfg.freeze_encoder_epochs) or epoch == self.start_epoch:
                logger.info(f"epoch {epoch}: encoder {'frozen' if frozen else 'trained'}")
        lr = self.lr_at(epoch)
        set_lr(self.optimizer, lr)
        start = time.perf_counter()
        tr = train_epoch(self.ctx, loaders[0], self.cfg.iterations_per_epoch)
        va = val_epoch(self.ctx, loaders[1], self.cfg.val_iterations_per_epoch)
        seconds = time.perf_counter() - start
        self.loader_positions = (loaders[0].position, loaders[1].position)
        dice = va.dice
        mean = float(np.nanmean(dice)) if dice and not np.all(np.isnan(dice)) else 0.0
        a = self.cfg.ema_alpha
        self.ema = mean if self.ema is None else a * self.ema + (1 - a) * mean
        rec = P.EpochRecord(epoch, tr.loss, va.loss, dice, self.ema, lr, seconds, tr.data_seconds + va.data_seconds)
        P.append(self.curves, rec)
        improved = self.best_ema is None or self.ema > self.best_ema
        if improved:
            self.best_ema = self.ema
        if self.dist.is_main:
            run = self.fc.run
            state = self.state(epoch + 1)
            save_checkpoint(run.latest, state)
            if improved:
                save_checkpoint(run.best, state)
            keys = self.dice_keys()
            P.write_files(run, self.curves, keys, self.fc.header)
            logger.info(P.format_line(rec, keys))
        self.on_epoch_end(epoch, rec)
        for listener in self.epoch_listeners:
            listener(epoch, rec)

    def _finish(self) -> FoldResult:
        run_dir, done = self.fc.run_dir, len(self.curves["epoch"])
        final = self.fc.run.final
        if self.dist.is_main:
            save_checkpoint(final, self.state(max(self.start_epoch, self.cfg.epochs)))
        if self.dist.enabled:
            diff = D.weights_max_diff(self.model, self.dist)
            if diff > 0:
                raise RuntimeError(f"DDP: model weights differ between ranks (max abs difference {diff})")
            if self.dist.is_main:
                logger.info(f"DDP: weights identical on all {self.dist.world_size} ranks")
        summary = None
        summary_file = self.fc.run.validation_summary
        if self.cfg.validate_at_end and self.dist.is_main:
            if self.start_epoch >= self.cfg.epochs and summary_file.is_file():
                summary = load_json(summary_file)  # a finished run resumed without more epochs
            else:
                summary = validate_fold(D.unwrap(self.model), self.fc, self.cfg, self.device)
        D.barrier(self.dist)
        best = float(self.best_ema) if self.best_ema is not None else float("nan")
        return FoldResult(run_dir, self.fc.fold, done, best, final if self.dist.is_main else None, summary)


def _close(loaders) -> None:
    for it in loaders or ():
        close = getattr(it, "close", None)
        if close is not None:
            close()


def remove_run_temps(run_dir: Path) -> int:
    """Remove the temporary files a killed run left in `run_dir` and its validation/ folder; log and return how many.

    Called by the owner of the run folder when a run is resumed (`autoseg train --resume`)."""
    return sum(remove_stale_temps(folder) for folder in (run_dir, RunFolder(run_dir).validation))


def train_fold(
    ws: Workspace,
    dataset: str,
    plans: Plans,
    configuration_name: str,
    fold: int | str,
    train_config: TrainConfig,
    *,
    trainer: str = "default",
    device: str | None = None,
    resume: bool = False,
    num_workers: int | None = None,
    deterministic: bool = False,
    group_by: str | None = None,
    on_epoch: EpochListener | None = None,
) -> FoldResult:
    """Train one fold (``fold`` int or "all") of a configuration; returns where the results are. `on_epoch(epoch,
    record)` is called after every epoch's checkpoint (e.g. to show progress)."""
    dev, info = setup_runtime(device, deterministic)
    fc = fold_context(ws, dataset, plans, configuration_name, fold, trainer, group_by, write=info.is_main)
    ckpt, train_config = find_resume_state(fc.run_dir, train_config, resume)
    if resume and info.is_main:  # the main rank owns the run folder (the other ranks never write it)
        remove_run_temps(fc.run_dir)
    if num_workers is None and info.enabled:
        num_workers = default_num_workers() // int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
    extra = train_config.trainer_kwargs  # the trainer class's own keyword arguments (--set trainer_kwargs.KEY=...)
    runner = trainers.create(trainer, fc, train_config, dev, num_workers, deterministic, kwargs=extra)
    if on_epoch is not None:
        runner.epoch_listeners.append(on_epoch)
    return runner.run(ckpt)
