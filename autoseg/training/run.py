"""`autoseg train` as one library call: resolve dataset and plans, then train each (configuration, fold)."""

from __future__ import annotations

from collections.abc import Sequence

from autoseg.errors import PlansError
from autoseg.log import logger
from autoseg.planning.plans import Plans
from autoseg.training.cascade import missing_predictions
from autoseg.training.config import TrainConfig, apply_overrides
from autoseg.training.distributed import env_info, shutdown
from autoseg.training.trainer import EpochListener, FoldResult, train_fold
from autoseg.workspace import Workspace


def default_configurations(plans: Plans) -> list[str]:
    """Every configuration in plans order, a cascade stage right after its previous stage (whose cross-validation
    predictions it needs), e.g. 2d, 3d_fullres, 3d_lowres, 3d_cascade_fullres."""
    order = [c.name for c in plans.configurations if c.previous_stage is None]
    later = [c for c in plans.configurations if c.previous_stage is not None]
    while later:
        placed = [c for c in later if c.previous_stage in order]
        if not placed:  # a chain that never reaches a trainable stage: keep plans order at the end
            return order + [c.name for c in later]
        for c in placed:
            order.insert(order.index(c.previous_stage) + 1, c.name)
        later = [c for c in later if c not in placed]
    return order


def cascade_ready(ws: Workspace, name: str, plans: Plans, configuration: str, trainer: str) -> bool:
    """False (with a log line saying why) when a cascade stage's previous-stage predictions are incomplete."""
    conf = plans.configuration(configuration)
    if conf.previous_stage is None:
        return True
    missing = missing_predictions(ws, name, plans, conf, trainer)
    if missing and env_info().is_main:
        logger.info(
            f"{configuration} skipped: {len(missing)} cross-validation prediction(s) of {conf.previous_stage} are "
            f"missing (e.g. {missing[0]}); train `-c {conf.previous_stage} -f 0..4` first"
        )
    return not missing


def train_folds(
    ws: Workspace,
    dataset: str | int,
    configurations: Sequence[str] | None = None,
    folds: Sequence[int | str] = (0, 1, 2, 3, 4),
    *,
    plans_name: str = "default",
    trainer: str = "default",
    overrides: dict | None = None,
    resume: bool = False,
    device: str | None = None,
    num_workers: int | None = None,
    group_by: str | None = None,
    deterministic: bool = False,
    on_epoch: EpochListener | None = None,
) -> list[FoldResult]:
    name = ws.resolve(dataset)
    path = ws.plans_file(name, plans_name)
    if not path.is_file():
        raise PlansError(f"{path}: plans not found; run `autoseg plan_and_preprocess -d {dataset}` first")
    plans = Plans.load(path)
    cfg = apply_overrides(TrainConfig(), overrides or {})
    results = []
    try:
        for conf in configurations or default_configurations(plans):
            if not configurations and not cascade_ready(ws, name, plans, conf, trainer):
                continue  # an explicit -c of the cascade gets fold_context's error instead
            for fold in folds:
                if env_info().is_main:
                    logger.info(f"training {name} {conf} fold {fold} ({trainer}, plans {plans.name})")
                results.append(
                    train_fold(
                        ws,
                        name,
                        plans,
                        conf,
                        fold,
                        cfg,
                        trainer=trainer,
                        device=device,
                        resume=resume,
                        num_workers=num_workers,
                        deterministic=deterministic,
                        group_by=group_by,
                        on_epoch=on_epoch,
                    )
                )
    finally:
        shutdown()
    return results
