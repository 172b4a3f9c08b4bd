"""Plans as typed, frozen data: Plans -> Configuration -> NetworkSpec, serialised to plans.json.

All spacings, shapes, patch sizes, kernel sizes and strides are in the plans' transposed axis order
(`Plans.transpose`: the coarsest axis first). A 2d configuration holds 2 values per axis field (the last two
transposed axes). Loading validates every field; an invariant that fails names the configuration and the field.
Loading also imports the plugin modules the plans recorded (`Plans.plugins`); one that is missing is an error
naming it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autoseg.errors import PlansError
from autoseg.fingerprint.fingerprint import IntensityStats
from autoseg.registry import import_recorded_plugins
from autoseg.serialization import from_json, load_json, save_json

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class NetworkSpec:
    """Which network (registry name) and its JSON-safe constructor parameters (the network's keyword arguments:
    the registered builder receives the spec and passes them on).

    Parameters of the built-in U-Nets: n_stages, features_per_stage, kernel_sizes, strides, n_conv_per_stage
    (or n_blocks_per_stage for residual encoders), n_conv_per_stage_decoder, conv_bias, norm, nonlin.
    """

    name: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Resampling:
    order_data: int = 3  # spline order for images (in-plane when separate-z)
    order_seg: int = 1  # linear on one-hot labels
    order_probabilities: int = 1  # export of logits/probabilities
    order_z: int = 0  # along the coarse axis when separate-z is used
    anisotropy_threshold: float = 3.0  # separate-z when max/min spacing exceeds this


@dataclass(frozen=True)
class Configuration:
    name: str  # "2d" | "3d_fullres" | "3d_lowres" | "3d_cascade_fullres" | user-defined
    data_identifier: str  # folder name of the preprocessed arrays (shared by configs that preprocess alike)
    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]
    median_shape: tuple[int, ...]  # median case shape at `spacing`
    batch_size: int
    batch_dice: bool
    normalization: tuple[str, ...]  # one normalizer name per input channel
    use_mask_for_norm: tuple[bool, ...]
    network: NetworkSpec
    resampling: Resampling = field(default_factory=Resampling)
    previous_stage: str | None = None  # cascade: configuration whose predictions are extra inputs
    next_stage: str | None = None
    # keyword arguments of each channel's normalizer (one object per channel), or () for none
    normalization_kwargs: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        where = f"configuration {self.name!r}"
        ndim = len(self.patch_size)
        if ndim not in (2, 3):
            raise PlansError(f"{where}: patch_size must have 2 or 3 values, got {self.patch_size}")
        for fname in ("spacing", "median_shape"):
            if len(getattr(self, fname)) != ndim:
                raise PlansError(f"{where}: {fname} has {len(getattr(self, fname))} values, patch_size has {ndim}")
        if self.batch_size < 1:
            raise PlansError(f"{where}: batch_size must be >= 1, got {self.batch_size}")
        if len(self.normalization) != len(self.use_mask_for_norm):
            raise PlansError(f"{where}: normalization and use_mask_for_norm must have one entry per channel")
        if self.normalization_kwargs and len(self.normalization_kwargs) != len(self.normalization):
            raise PlansError(
                f"{where}: normalization_kwargs must have one object per channel ({len(self.normalization)}), "
                f"got {len(self.normalization_kwargs)}"
            )
        strides = self.network.params.get("strides")
        if strides is not None:
            for axis in range(ndim):
                total = math.prod(int(s[axis]) for s in strides)
                if self.patch_size[axis] % total:
                    raise PlansError(
                        f"{where}: patch_size {list(self.patch_size)} is not divisible by the product of the strides "
                        f"along axis {axis} ({total}); field network.params.strides / patch_size"
                    )

    @property
    def ndim(self) -> int:
        return len(self.patch_size)


@dataclass(frozen=True)
class Plans:
    schema_version: int
    name: str  # "default", "bs4", ...; part of the results path
    dataset: str
    planner: str  # the planner's registered name; the default planner with a preset records the preset ("resenc-m")
    transpose: tuple[int, ...]  # forward transpose of the spatial axes (z, y, x) -> training order
    original_median_spacing: tuple[float, ...]  # transposed
    original_median_shape: tuple[int, ...]  # transposed, after crop
    gpu_memory_gb: float
    configurations: tuple[Configuration, ...]
    plugins: tuple[str, ...] = ()  # plugin modules imported when the plans were made; Plans.load imports them again
    autoseg_version: str = ""
    # per input channel: the dataset's foreground intensity statistics (used by the "ct" normaliser); None: not stored
    intensity: tuple[IntensityStats, ...] | None = None

    def __post_init__(self) -> None:
        if sorted(self.transpose) != list(range(len(self.transpose))):
            raise PlansError(f"plans {self.name!r}: transpose {self.transpose} is not a permutation")
        names = [c.name for c in self.configurations]
        if len(set(names)) != len(names):
            raise PlansError(f"plans {self.name!r}: duplicate configuration names {names}")
        for c in self.configurations:
            for ref in (c.previous_stage, c.next_stage):
                if ref is not None and ref not in names:
                    raise PlansError(f"configuration {c.name!r}: refers to unknown configuration {ref!r}")

    @property
    def transpose_backward(self) -> tuple[int, ...]:
        inv = [0] * len(self.transpose)
        for i, a in enumerate(self.transpose):
            inv[a] = i
        return tuple(inv)

    def names(self) -> list[str]:
        return [c.name for c in self.configurations]

    def configuration(self, name: str) -> Configuration:
        for c in self.configurations:
            if c.name == name:
                return c
        raise PlansError(f"plans {self.name!r} have no configuration {name!r}; available: {', '.join(self.names())}")

    def with_plugins(self, modules: Sequence[str]) -> Plans:
        """These plans with `modules` added to their plugins (order kept, no duplicates)."""
        merged = tuple(dict.fromkeys((*self.plugins, *modules)))
        return self if merged == self.plugins else replace(self, plugins=merged)

    def save(self, path: str | Path) -> Path:
        return save_json(path, self)

    @classmethod
    def load(cls, path: str | Path) -> Plans:
        try:
            data = load_json(path)
        except ValueError as exc:
            raise PlansError(str(exc)) from exc
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise PlansError(
                f"{path}: plans schema_version {version!r}, this autoseg reads {SCHEMA_VERSION}; "
                "re-run `autoseg plan -d N`"
            )
        try:
            plans = from_json(cls, data)
        except (ValueError, PlansError) as exc:
            raise PlansError(f"{path}: {exc}") from exc
        import_recorded_plugins(plans.plugins, f"plans {path}")
        return plans
