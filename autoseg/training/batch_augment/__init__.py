"""nnU-Net's training augmentation as batched torch transforms that run on the training device.

Each transform draws its random parameters for a whole batch from an explicit CPU `torch.Generator` (`draw`) and
applies them batched on the device of the data (`apply`), so a batch depends only on the generator's seed and the
crops. `torch_default_pipeline(spec)` / `torch_validation_pipeline(spec)` build the default `BatchPipeline`s from an
`autoseg.training.augment.AugmentSpec`; `default_transforms(spec)` is the editable transform list.

Modules: `base` (protocol, draw helpers), `spatial` (rotation/scaling + crop, mirroring), `intensity` (noise, blur,
brightness, contrast, gamma), `resolution` (simulated low resolution), `finish` (masking, -1 -> 0, deep-supervision
targets), `cascade` (previous stage -> one-hot channels), `pipeline`.
"""

from autoseg.training.batch_augment.base import BatchTransform
from autoseg.training.batch_augment.cascade import PrevStageToData
from autoseg.training.batch_augment.finish import DeepSupervisionTargets, MaskOutside, ReplaceLabel
from autoseg.training.batch_augment.intensity import (
    BrightnessMultiplicative,
    Contrast,
    Gamma,
    GaussianBlur,
    GaussianNoise,
)
from autoseg.training.batch_augment.pipeline import (
    BatchPipeline,
    default_transforms,
    torch_default_pipeline,
    torch_validation_pipeline,
)
from autoseg.training.batch_augment.resolution import SimulateLowResolution
from autoseg.training.batch_augment.spatial import Mirror, Spatial

__all__ = [
    "BatchPipeline",
    "BatchTransform",
    "BrightnessMultiplicative",
    "Contrast",
    "DeepSupervisionTargets",
    "Gamma",
    "GaussianBlur",
    "GaussianNoise",
    "MaskOutside",
    "Mirror",
    "PrevStageToData",
    "ReplaceLabel",
    "SimulateLowResolution",
    "Spatial",
    "default_transforms",
    "torch_default_pipeline",
    "torch_validation_pipeline",
]
