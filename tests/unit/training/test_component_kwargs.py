"""Keyword arguments of registered components: from the train config (`--set *_kwargs.KEY=...`) and the plans,
checked against the component's signature with an error naming the component and the keyword."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from test_loader import STRIDES_3D, blob_cases, configuration

from autoseg.errors import ConfigError, PlansError
from autoseg.planning.plans import Configuration
from autoseg.preprocessing.normalize import normalize, normalizers
from autoseg.registry import Registry
from autoseg.serialization import from_json, to_json
from autoseg.training.augment import AugmentSpec, Pipeline, augmentations, no_augmentation
from autoseg.training.config import TrainConfig, apply_overrides, load_train_config, save_train_config
from autoseg.training.loader import make_loaders
from autoseg.training.losses import DiceCELoss, build_loss
from autoseg.training.optim import build_optimizer, optimizers
from autoseg.training.pipelines import build_pipeline
from autoseg.training.trainer import Trainer, trainers


@pytest.fixture
def registered() -> Iterator[list[tuple[Registry, str]]]:
    """(registry, name) pairs a test registered; removed afterwards."""
    added: list[tuple[Registry, str]] = []
    yield added
    for reg, name in added:
        reg.unregister(name)
        assert name not in reg


# ---- the mechanism ------------------------------------------------------------------------------------------------
def test_registry_create_passes_and_checks_kwargs():
    reg: Registry = Registry("widget")

    def widget(size: int, *, colour: str = "red", shade: float = 0.5) -> tuple:
        return size, colour, shade

    reg.register("w", widget)
    assert reg.create("w", 3, kwargs={"colour": "blue"}) == (3, "blue", 0.5)
    assert reg.create("w", 3) == (3, "red", 0.5)
    with pytest.raises(ConfigError, match="widget 'w' has no keyword argument 'color'; it accepts: colour, shade"):
        reg.create("w", 3, kwargs={"color": "blue"})
    with pytest.raises(ConfigError, match="widget 'w' has no keyword argument 'size'"):
        reg.create("w", 3, kwargs={"size": 4})  # filled by autoseg's positional argument
    with pytest.raises(ConfigError, match="keyword argument 'colour' is set by autoseg"):
        reg.create("w", 3, colour="green", kwargs={"colour": "blue"})

    def needs(size: int, factor: float) -> float:
        return size * factor

    reg.register("n", needs)
    with pytest.raises(ConfigError, match="widget 'n': missing a required argument: 'factor'"):
        reg.create("n", 3)
    assert reg.create("n", 3, kwargs={"factor": 2.0}) == 6.0


# ---- train config -------------------------------------------------------------------------------------------------
def test_train_config_kwargs_from_set_and_json(tmp_path):
    cfg = apply_overrides(TrainConfig(), {"loss_kwargs.weight_ce": 2, "optimizer_kwargs": {"amsgrad": True}})
    assert cfg.loss_kwargs == {"weight_ce": 2} and cfg.optimizer_kwargs == {"amsgrad": True}
    cfg = apply_overrides(cfg, {"loss_kwargs.weight_dice": 0.5})
    assert cfg.loss_kwargs == {"weight_ce": 2, "weight_dice": 0.5}
    assert TrainConfig().loss_kwargs == {}  # defaults are not shared or mutated
    save_train_config(tmp_path / "train_config.json", cfg)
    assert load_train_config(tmp_path / "train_config.json") == cfg
    with pytest.raises(ConfigError, match="training setting loss_kwargs=3 must be a JSON object"):
        apply_overrides(TrainConfig(), {"loss_kwargs": 3})
    with pytest.raises(ConfigError, match="unknown training setting 'lr.x'"):
        apply_overrides(TrainConfig(), {"lr.x": 3})


# ---- loss, optimizer, augmentation, trainer -----------------------------------------------------------------------
def test_loss_gets_its_kwargs_and_a_bad_one_is_named():
    loss = build_loss("dice_ce", 3, True, kwargs=TrainConfig(loss_kwargs={"weight_ce": 2.0}).loss_kwargs)
    assert isinstance(loss, DiceCELoss) and (loss.weight_ce, loss.weight_dice) == (2.0, 1.0)
    with pytest.raises(ConfigError) as err:
        build_loss("dice_ce", 3, True, kwargs={"weight_cee": 2.0})
    assert str(err.value) == (
        "loss 'dice_ce' has no keyword argument 'weight_cee'; it accepts: weight_ce, weight_dice. "
        "Did you mean 'weight_ce'?"
    )
    with pytest.raises(ConfigError, match="loss 'ce' has no keyword argument 'weight_ce'; it accepts: none"):
        build_loss("ce", 3, True, kwargs={"weight_ce": 2.0})


def test_optimizer_gets_its_kwargs(registered):
    def adam(params, cfg: TrainConfig, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(betas))

    optimizers.register("test_adam", adam)
    registered.append((optimizers, "test_adam"))
    model = torch.nn.Linear(2, 2)
    cfg = apply_overrides(TrainConfig(), {"optimizer": "test_adam", "optimizer_kwargs.betas": [0.5, 0.9]})
    assert build_optimizer(model, cfg).param_groups[0]["betas"] == (0.5, 0.9)
    bad = apply_overrides(TrainConfig(), {"optimizer_kwargs.nesterov": False})
    with pytest.raises(ConfigError, match="optimizer 'sgd' has no keyword argument 'nesterov'; it accepts: none"):
        build_optimizer(model, bad)


def test_augmentation_gets_its_kwargs_through_the_loaders(registered, tmp_path):
    seen: list[float] = []

    def scaled(spec: AugmentSpec, factor: float = 1.0) -> Pipeline:
        seen.append(factor)
        base = no_augmentation(spec)

        def transform(**batch) -> dict:
            out = base.transform(**batch)
            return {**out, "data": out["data"] * factor}

        return Pipeline(base.sample_size, transform)

    augmentations.register("test_scaled", scaled)
    registered.append((augmentations, "test_scaled"))
    ids = blob_cases(tmp_path)
    cfg = apply_overrides(TrainConfig(), {"augmentation": "test_scaled", "augmentation_kwargs.factor": 0.0})
    train, _ = make_loaders(tmp_path, ids, ids, configuration((8, 16, 16), STRIDES_3D), cfg, num_workers=0)
    assert seen == [0.0] and float(next(train).data.abs().max()) == 0.0
    with pytest.raises(ConfigError, match="augmentation 'test_scaled' has no keyword argument 'scale'"):
        build_pipeline("test_scaled", None, {"scale": 2.0})


class WarmupTrainer(Trainer):
    def __init__(self, fc, cfg, device, num_workers, deterministic, warmup_epochs: int = 0):
        super().__init__(fc, cfg, device, num_workers, deterministic)
        self.warmup_epochs = warmup_epochs


def test_trainer_gets_its_kwargs(registered):
    trainers.register("test_warmup", WarmupTrainer)
    registered.append((trainers, "test_warmup"))
    cfg = apply_overrides(TrainConfig(), {"trainer_kwargs.warmup_epochs": 5})
    args = (None, cfg, torch.device("cpu"), 0, False)
    made = trainers.create("test_warmup", *args, kwargs=cfg.trainer_kwargs)
    assert isinstance(made, WarmupTrainer) and made.warmup_epochs == 5
    with pytest.raises(ConfigError, match="trainer 'test_warmup' has no keyword argument 'warmup'; it accepts: "):
        trainers.create("test_warmup", *args, kwargs={"warmup": 5})
    with pytest.raises(ConfigError, match="trainer 'default' has no keyword argument 'warmup_epochs'"):
        trainers.create("default", *args, kwargs=cfg.trainer_kwargs)


# ---- normaliser kwargs from the plans -----------------------------------------------------------------------------
def test_normalizer_gets_its_kwargs_from_the_plans(registered):
    def clip(channel: np.ndarray, seg, use_mask: bool, stats, *, upper: float = 1.0) -> np.ndarray:
        return np.minimum(channel, upper).astype(np.float32)

    normalizers.register("test_clip", clip)
    registered.append((normalizers, "test_clip"))
    conf = configuration((8, 16, 16), STRIDES_3D)
    data = to_json(conf)
    data.update(normalization=["test_clip"], normalization_kwargs=[{"upper": 0.25}])
    conf = from_json(Configuration, data)  # the plans' JSON round trip keeps them
    assert conf.normalization_kwargs == ({"upper": 0.25},)
    image = np.ones((1, 2, 2, 2), np.float32)
    out = normalize(image, None, conf.normalization, conf.use_mask_for_norm, None, conf.normalization_kwargs)
    assert float(out.max()) == 0.25
    with pytest.raises(ConfigError, match="normalization scheme 'test_clip' has no keyword argument 'lower'"):
        normalize(image, None, conf.normalization, conf.use_mask_for_norm, None, ({"lower": 0.0},))
    data.update(normalization_kwargs=[{}, {}])
    with pytest.raises(PlansError, match="normalization_kwargs must have one object per channel"):
        from_json(Configuration, data)
