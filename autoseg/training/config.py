"""TrainConfig: every training number in one typed, frozen dataclass, overridable with ``--set key=value``.

Defaults follow nnU-Net v2's trainer (1000 epochs x 250 iterations, SGD Nesterov 0.99, lr 1e-2, poly 0.9, weight
decay 3e-5, gradient clipping 12, 33 % foreground oversampling). The config used is saved as
``fold_k/train_config.json`` and inside every checkpoint.

Every registered component named here (loss, optimizer, augmentation) and the trainer class take keyword arguments
from the matching ``*_kwargs`` field: ``--set loss_kwargs.weight_ce=2`` (one key) or
``--set 'loss_kwargs={"weight_ce": 2}'`` (the whole object). They are checked against the component's signature
when it is built; an unknown keyword is an error naming the component and the keyword.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin, get_type_hints

from autoseg.errors import ConfigError
from autoseg.serialization import from_json, load_json, save_json


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    lr: float = 1e-2
    weight_decay: float = 3e-5
    momentum: float = 0.99
    poly_exponent: float = 0.9
    oversample_foreground: float = 0.33
    seed: int = 12345
    grad_clip: float = 12.0  # max gradient norm; 0 disables clipping
    loss: str = "dice_ce"
    optimizer: str = "sgd"
    augmentation: str = "default"
    deep_supervision: bool = True
    batch_size: int = 0  # 0 = the plans' batch size (the global batch under DDP)
    ema_alpha: float = 0.9  # EMA pseudo-Dice = alpha * previous + (1 - alpha) * current
    amp: bool = True  # mixed precision (autocast); false = full precision everywhere
    # training-step switches (autoseg.training.step_options): nnU-Net's CUDA defaults on, the rest off until measured
    amp_dtype: str = "auto"  # "auto" (float16 on CUDA, none on CPU), "float16" or "bfloat16" (any device)
    channels_last: bool = False  # weights and batches in channels-last memory format
    cudnn_benchmark: bool = True  # cuDNN autotuning on CUDA (never with --deterministic)
    compile: str = ""  # torch.compile backend for the training step, e.g. "inductor" ("" = off)
    val_step: float = 0.5  # sliding-window step (fraction of the patch) in end-of-fold validation
    val_tta: bool = True  # mirror test-time augmentation in end-of-fold validation
    validate_at_end: bool = True  # full-volume validation of the fold's cases after training
    save_probabilities: bool = True  # fold_k/validation/<case>.npz for ensembling
    # fine-tuning (autoseg.training.pretrained): initial weights, linear lr warm-up, epochs with the encoder frozen
    pretrained: str = ""  # checkpoint, run folder or bundle folder ("" = random initialisation); --pretrained PATH
    warmup_epochs: int = 0  # lr rises linearly to `lr` over these epochs, then the poly schedule over the rest
    freeze_encoder_epochs: int = 0  # the encoder's weights stay fixed during the first N epochs
    # keyword arguments of the components above and of the trainer class (see the module docstring)
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    augmentation_kwargs: dict[str, Any] = field(default_factory=dict)
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.iterations_per_epoch >= 1, "iterations_per_epoch must be >= 1"),
            (self.val_iterations_per_epoch >= 0, "val_iterations_per_epoch must be >= 0"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (0 <= self.oversample_foreground <= 1, "oversample_foreground must be in [0, 1]"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0 = off)"),
            (self.batch_size >= 0, "batch_size must be >= 0 (0 = from plans)"),
            (0 <= self.ema_alpha < 1, "ema_alpha must be in [0, 1)"),
            (0 < self.val_step <= 1, "val_step must be in (0, 1]"),
            (0 <= self.warmup_epochs < self.epochs, "warmup_epochs must be >= 0 and < epochs"),
            (self.freeze_encoder_epochs >= 0, "freeze_encoder_epochs must be >= 0"),
            (self.amp_dtype in ("auto", "float16", "bfloat16"), "amp_dtype must be auto, float16 or bfloat16"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"train config: {message}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def kwargs_names(cls) -> list[str]:
        """The ``*_kwargs`` fields (keyword arguments of registered components)."""
        return [n for n in cls.names() if n.endswith("_kwargs")]


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Return `cfg` with `overrides` applied; names and types are checked (an int is accepted for a float).

    ``FIELD_kwargs.KEY`` sets one keyword argument of a component; ``FIELD_kwargs`` replaces the whole object."""
    hints = get_type_hints(TrainConfig)
    valid = TrainConfig.names()
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        owner, dot, kw = key.partition(".")
        if dot and owner in TrainConfig.kwargs_names() and kw.isidentifier():
            changes.setdefault(owner, dict(getattr(cfg, owner)))[kw] = value
            continue
        if key not in hints:
            raise ConfigError(f"unknown training setting {key!r}; valid names: {', '.join(valid)}")
        tp = hints[key]
        if get_origin(tp) is dict:
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ConfigError(
                    f"training setting {key}={value!r} must be a JSON object, e.g. --set '{key}={{\"name\": 1}}' "
                    f"or one keyword with --set {key}.name=1"
                )
            changes[key] = dict(value)
            continue
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if tp is bool and isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            example = str(getattr(TrainConfig(), key)).lower() if tp is bool else getattr(TrainConfig(), key)
            raise ConfigError(
                f"training setting {key}={value!r} must be of type {tp.__name__}, e.g. --set {key}={example}"
            )
        changes[key] = value
    return dataclasses.replace(cfg, **changes)


def save_train_config(path: str | Path, cfg: TrainConfig) -> Path:
    return save_json(path, cfg)


def load_train_config(path: str | Path) -> TrainConfig:
    try:
        return from_json(TrainConfig, load_json(path))
    except ValueError as exc:
        raise ConfigError(f"{path}: invalid train config: {exc}") from exc


def config_from_dict(data: dict[str, Any], where: str = "checkpoint") -> TrainConfig:
    try:
        return from_json(TrainConfig, data)
    except ValueError as exc:
        raise ConfigError(f"{where}: invalid train config: {exc}") from exc
