"""`autoseg train` as one library call: resolve dataset and plans, then train each (configuration, fold)."""

from __future__ import annotations

from collections.abc import Sequence

from autoseg.errors import PlansError
from autoseg.log import logger
from autoseg.training.config import TrainConfig, apply_overrides
from autoseg.training.distributed import env_info, shutdown
from autoseg.training.trainer import FoldResult, train_fold


def default_configurations(plans) -> list[str]:
    """Every configuration except cascade stages (they need the previous stage's cross-validation predictions)."""
    return [c.name for c in plans.configurations if c.previous_stage is None]


def train_folds(
    ws,
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
) -> list[FoldResult]:
    from autoseg.planning.plans import Plans

    name = ws.resolve(dataset)
    path = ws.plans_file(name, plans_name)
    if not path.is_file():
        raise PlansError(f"{path}: plans not found; run `autoseg plan_and_preprocess -d {dataset}` first")
    plans = Plans.load(path)
    cfg = apply_overrides(TrainConfig(), overrides or {})
    results = []
    try:
        for conf in configurations or default_configurations(plans):
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
                    )
                )
    finally:
        shutdown()
    return results
