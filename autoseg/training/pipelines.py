"""Augmentation pipelines by name: "default" (nnU-Net's transforms batched in torch, `batch_augment`), and
"batchgenerators" (the same transforms with batchgenerators v1 on numpy, the reference for A/B runs) and "none"
(validation) from `augment`. A user's pipeline registers in `augment.augmentations` like these."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autoseg.training.augment import AugmentationPipeline, AugmentSpec, augmentations
from autoseg.training.batch_augment.pipeline import torch_default_pipeline

augmentations.register("default")(torch_default_pipeline)


def build_pipeline(name: str, spec: AugmentSpec, kwargs: Mapping[str, Any] | None = None) -> AugmentationPipeline:
    """The registered pipeline `name` for `spec`, given `kwargs` (TrainConfig.augmentation_kwargs), checked."""
    return augmentations.create(name, spec, kwargs=kwargs)
