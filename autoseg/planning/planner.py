"""The rule-based planner: DatasetFingerprint -> Plans (2d, 3d_fullres, 3d_lowres, 3d_cascade_fullres) + explanations.

`planners` maps names to planner classes ("default"); the residual-encoder presets ("resenc-m", "resenc-l",
"resenc-xl") are settings of the same planner, chosen with `preset`. The planner never reads files.

The network is sized by its registered memory model (`autoseg.networks.memory.network_memory`): its feature-map
estimate and its reference values (how many voxels fit how many GB), unless the preset states its own reference
values for its network. Any network with a registered estimate can be planned (``network=NAME``). Plans record the
planner's registered name and the plugin modules imported when they were made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from autoseg import __version__
from autoseg.errors import ConfigError, FingerprintError
from autoseg.fingerprint.fingerprint import DatasetFingerprint
from autoseg.fingerprint.nnunet_compat import from_nnunet, is_nnunet_fingerprint
from autoseg.networks.memory import MemoryReference, NetworkMemory, network_memory
from autoseg.planning import topology as T
from autoseg.planning.edit import apply_overrides
from autoseg.planning.explain import axes_text, fmt
from autoseg.planning.plans import SCHEMA_VERSION, Configuration, NetworkSpec, Plans
from autoseg.registry import Registry, imported_plugins
from autoseg.serialization import load_json

planners: Registry[type] = Registry("planner")


@dataclass(frozen=True)
class PlannerSettings:
    """Constants of one planner flavour (defaults: nnU-Net's ExperimentPlanner)."""

    name: str = "default"
    network: str = "unet"
    gpu_memory_gb: float = 8.0  # the budget used when the caller gives none
    # feature-map voxels that fit how many GB at which batch size, for `network`; None: the network's registered
    # reference values (the plain U-Net's: 560e6 3D / 85e6 2D at 8 GB, batch 2 / 12)
    reference: MemoryReference | None = None
    shrink_until_batch_2: bool = True  # shrink while estimate / ref_batch * 2 > reference (else estimate > reference)
    max_dataset_covered: float = 0.05  # 1.0 removes the 5 % cap
    encoder_blocks: tuple[int, ...] = (2,)  # per stage; the last value repeats for deeper stages
    decoder_convs: tuple[int, ...] = (2,)
    base_features: int = 32
    max_features_3d: int = 320
    max_features_2d: int = 512
    min_batch: int = 2
    min_edge: int = T.MIN_FEATURE_MAP_EDGE
    lowres_threshold: float = 0.25
    lowres_factor: float = 1.03
    lowres_min_ratio: float = 2.0
    anisotropy_threshold: float = T.ANISOTROPY_THRESHOLD


_RESENC = PlannerSettings(
    network="resenc_unet",
    shrink_until_batch_2=False,
    max_dataset_covered=1.0,
    encoder_blocks=(1, 3, 4, 6),
    decoder_convs=(1,),
)
PRESETS: dict[str | None, PlannerSettings] = {
    None: PlannerSettings(),
    "resenc-m": replace(_RESENC, name="resenc-m"),  # resenc_unet's registered reference: 680e6 / 135e6 at 8 GB
    "resenc-l": replace(_RESENC, name="resenc-l", gpu_memory_gb=24.0, reference=MemoryReference(2.1e9, 380e6, 24.0)),
    "resenc-xl": replace(_RESENC, name="resenc-xl", gpu_memory_gb=40.0, reference=MemoryReference(3.6e9, 560e6, 40.0)),
}


def memory_reference(settings: PlannerSettings, network: str) -> MemoryReference:
    """The reference values the planner sizes `network` with: the settings' own when they were stated for that
    network (the ResEnc L/XL presets), else the network's registered ones (ConfigError if it has none)."""
    if settings.reference is not None and network == settings.network:
        return settings.reference
    return network_memory(network).reference


def planner_label(name: str, preset: str | None) -> str:
    """What plans record as their planner: the registered name; with a preset, the preset for the default planner
    ("resenc-m", as `--preset` names it) and "NAME:PRESET" for any other planner."""
    if not preset:
        return name
    return preset if name == "default" else f"{name}:{preset}"


def plans_memory_reference(plans: Plans, network: str) -> MemoryReference:
    """The reference values plans made by the built-in planner sized `network` with (their preset's or the
    network's registered ones); for tools that re-derive the planner's memory model, e.g. the benchmark."""
    preset = plans.planner.rpartition(":")[2]
    return memory_reference(PRESETS.get(preset if preset in PRESETS else None, PRESETS[None]), network)


def _per_stage(values: tuple[int, ...], n: int) -> list[int]:
    return [values[min(i, len(values) - 1)] for i in range(n)]


@dataclass(frozen=True)
class _Context:
    settings: PlannerSettings
    network: str  # registry name of the planned network
    memory: NetworkMemory  # its feature-map estimate
    reference: MemoryReference  # the reference values it is sized with
    gpu_memory_gb: float
    n_channels: int
    n_classes: int
    normalization: tuple[str, ...]
    use_mask_for_norm: tuple[bool, ...]
    axis_names: tuple[str, ...]  # transposed 3D axis names


@planners.register("default")
class DefaultPlanner:
    """nnU-Net v2's ExperimentPlanner rules (and its ResEnc presets), with an explanation for every decision."""

    def settings_for(self, preset: str | None) -> PlannerSettings:
        if preset not in PRESETS:
            known = ", ".join(p for p in PRESETS if p)
            raise ConfigError(f"unknown planner preset {preset!r}; known: {known}")
        return PRESETS[preset]

    # ---- one configuration ---------------------------------------------------------------------------------------
    def network_params(self, s: PlannerSettings, topo: T.Topology) -> dict:
        n, dim = topo.n_stages, len(topo.patch_size)
        return {
            "n_stages": n,
            "features_per_stage": T.features_per_stage(
                n, s.base_features, s.max_features_3d if dim == 3 else s.max_features_2d
            ),
            "kernel_sizes": [list(k) for k in topo.kernel_sizes],
            "strides": [list(st) for st in topo.strides],
            "n_conv_per_stage": _per_stage(s.encoder_blocks, n),
            "n_conv_per_stage_decoder": _per_stage(s.decoder_convs, n - 1),
            "conv_bias": True,
            "norm": "instance",
            "nonlin": "leaky_relu",
        }

    def estimate(self, ctx: _Context, topo: T.Topology) -> int:
        """Feature-map voxels of the planned network (without deep supervision, as nnU-Net's planner counts)."""
        params = self.network_params(ctx.settings, topo)
        return int(ctx.memory.estimate(params, topo.patch_size, ctx.n_channels, ctx.n_classes, False))

    def plan_configuration(
        self,
        ctx: _Context,
        name: str,
        spacing: np.ndarray,
        median_shape: np.ndarray,
        n_voxels_dataset: float,
        data_identifier: str,
    ) -> tuple[Configuration, list[str]]:
        s, dim = ctx.settings, len(spacing)
        names = ctx.axis_names[-dim:]
        reference = ctx.reference.voxels(dim) * ctx.gpu_memory_gb / ctx.reference.gpu_gb
        ref_bs = ctx.reference.batch(dim)
        factor = 2.0 / ref_bs if s.shrink_until_batch_2 else 1.0
        initial = T.initial_patch_size(spacing, median_shape)
        topo = T.pool_schedule(spacing, initial, s.min_edge)
        start = topo.patch_size
        topo, steps = T.shrink_patch(
            spacing, median_shape, topo, lambda t: self.estimate(ctx, t) * factor > reference, s.min_edge
        )
        estimate = self.estimate(ctx, topo)
        bs, bs_why = T.batch_size(
            reference, estimate, ref_bs, n_voxels_dataset, topo.patch_size, s.max_dataset_covered, s.min_batch
        )
        rule = f"estimate / {ref_bs} x 2 <= reference" if s.shrink_until_batch_2 else "estimate <= reference"
        why = [
            f"{name}: spacing {axes_text(spacing, names)} mm, median shape {axes_text(median_shape, names)}",
            f"{name}: initial patch {axes_text(initial)} (aspect ratio 1/spacing, "
            f"{'256^3' if dim == 3 else '2048^2'} voxels, clipped to the median shape), padded to {axes_text(start)}",
            f"{name}: patch {axes_text(topo.patch_size)} after {steps} shrink step(s) so that {rule} "
            f"({estimate:.3g} feature-map voxels vs reference {reference:.3g} for {fmt(ctx.gpu_memory_gb)} GB)",
            f"{name}: {T.topology_text(topo, spacing, names)}",
            f"{name}: {bs_why}",
        ]
        cfg = Configuration(
            name=name,
            data_identifier=data_identifier,
            spacing=tuple(float(v) for v in spacing),
            patch_size=tuple(int(v) for v in topo.patch_size),
            median_shape=tuple(int(round(float(v))) for v in median_shape),
            batch_size=int(bs),
            batch_dice=True,
            normalization=ctx.normalization,
            use_mask_for_norm=ctx.use_mask_for_norm,
            network=NetworkSpec(ctx.network, self.network_params(s, topo)),
        )
        return cfg, why

    # ---- lowres ----------------------------------------------------------------------------------------------------
    def plan_lowres(
        self, ctx: _Context, fullres: Configuration, median_shape: np.ndarray, num_training: int, data_identifier: str
    ) -> tuple[Configuration | None, list[str]]:
        s = ctx.settings
        full_spacing = np.asarray(fullres.spacing, float)
        spacing = full_spacing.copy()
        median_voxels = float(np.prod(median_shape, dtype=np.float64))
        full_voxels = median_voxels
        coverage = float(np.prod(fullres.patch_size, dtype=np.float64)) / median_voxels
        if coverage >= s.lowres_threshold:
            return None, [
                f"no 3d_lowres: the 3d_fullres patch covers {fmt(100 * coverage)} % of the median image (>= 25 %)"
            ]
        lowres, lw, steps = None, [], 0
        while coverage < s.lowres_threshold:
            grow = (spacing.max() / spacing) > 2
            spacing = np.where(grow, spacing * s.lowres_factor, spacing) if grow.any() else spacing * s.lowres_factor
            scaled = full_spacing / spacing * median_shape
            median_voxels = float(np.prod(scaled, dtype=np.float64))
            shape = np.array([round(float(v)) for v in scaled], dtype=float)
            lowres, lw = self.plan_configuration(
                ctx, "3d_lowres", spacing, shape, median_voxels * num_training, data_identifier
            )
            coverage = float(np.prod(lowres.patch_size, dtype=np.float64)) / median_voxels
            steps += 1
        ratio = full_voxels / median_voxels
        head = (
            f"3d_lowres: the 3d_fullres patch covers < 25 % of the median image; spacing x{fmt(s.lowres_factor)} "
            f"{steps} times (finest axes first) to {axes_text(spacing)} mm, "
            f"where the patch covers {fmt(100 * coverage)} %"
        )
        if ratio < s.lowres_min_ratio:
            return None, [f"{head}; dropped: fullres/lowres voxel ratio {fmt(ratio)} < {fmt(s.lowres_min_ratio)}"]
        return lowres, [f"{head}; kept (fullres/lowres voxel ratio {fmt(ratio)} >= {fmt(s.lowres_min_ratio)})", *lw]

    # ---- whole plans -----------------------------------------------------------------------------------------------
    def plan(
        self,
        fingerprint: DatasetFingerprint,
        gpu_memory_gb: float | None = None,
        preset: str | None = None,
        plans_name: str | None = None,
        network: str | None = None,
    ) -> tuple[Plans, list[str]]:
        """Plan every configuration; `gpu_memory_gb` None means the preset's target (8 GB for the default).

        plans_name None: "default" for the default planner, else the planner's registered name (so a plugin
        planner's plans never overwrite the default ones). network: registry name of the network to plan (None:
        the preset's); it needs a registered memory estimate (ConfigError listing the networks that have one)."""
        s = self.settings_for(preset)
        gpu = float(gpu_memory_gb if gpu_memory_gb is not None else s.gpu_memory_gb)
        if gpu <= 0:
            raise ConfigError(f"--gpu-memory must be positive, got {gpu}")
        registered = planners.name_of(type(self)) or type(self).__name__
        plans_name = plans_name or registered
        net = network or s.network
        memory, reference = network_memory(net), memory_reference(s, net)
        spacings, shapes = fingerprint.spacings, fingerprint.shapes_after_crop
        if len(spacings) == 0:
            raise ConfigError(f"fingerprint of {fingerprint.dataset} has no cases; nothing to plan")
        target, why_spacing = T.fullres_target_spacing(spacings, shapes, s.anisotropy_threshold)
        tf, why_transpose = T.transpose_forward(target)
        tf_idx = list(tf)
        norm, masks, why_norm = T.normalization_schemes(
            fingerprint.channel_names, fingerprint.median_relative_size_after_cropping
        )
        ctx = _Context(
            s, net, memory, reference, gpu, len(fingerprint.channel_names), fingerprint.scheme.num_outputs, norm,
            masks,
            tuple(T.AXIS_NAMES[i] for i in tf),
        )  # fmt: skip
        median_shape = T.median_resampled_shape(spacings, shapes, target)[tf_idx]
        spacing_t = target[tf_idx]
        n_voxels = float(np.prod(median_shape, dtype=np.float64) * fingerprint.num_training)
        why = [
            f"planner {type(self).__name__}{'' if registered == 'default' else f' ({registered!r})'}"
            f"{' preset ' + s.name if preset else ''}, network {net}, GPU memory {fmt(gpu)} GB",
            why_spacing,
            why_transpose,
            *why_norm,
        ]
        configs: list[Configuration] = []
        if median_shape[0] != 1:
            fullres, w = self.plan_configuration(ctx, "3d_fullres", spacing_t, median_shape, n_voxels, "3d_fullres")
            lowres_id = "3d_lowres" if plans_name == "default" else f"3d_lowres_{plans_name}"
            lowres, w_low = self.plan_lowres(ctx, fullres, median_shape, fingerprint.num_training, lowres_id)
            why += w + w_low
            if lowres is not None:
                configs += [
                    replace(lowres, batch_dice=False, next_stage="3d_cascade_fullres"),
                    fullres,
                    replace(fullres, name="3d_cascade_fullres", previous_stage="3d_lowres"),
                ]
                why.append("batch_dice: 3d_lowres False, 3d_fullres and 3d_cascade_fullres True (cascade planned)")
            else:
                configs.append(replace(fullres, batch_dice=False))
                why.append("batch_dice: 3d_fullres False (no cascade)")
        else:
            why.append("no 3D configurations: the median image has a single slice (2D data)")
        plan2d, w2d = self.plan_configuration(ctx, "2d", spacing_t[1:], median_shape[1:], n_voxels, "2d")
        configs.insert(0, plan2d)
        why += w2d + ["batch_dice: 2d True"]
        plans = Plans(
            schema_version=SCHEMA_VERSION,
            name=plans_name,
            dataset=fingerprint.dataset,
            planner=planner_label(registered, preset),
            transpose=tuple(int(i) for i in tf),
            original_median_spacing=tuple(float(v) for v in fingerprint.median_spacing[tf_idx]),
            original_median_shape=tuple(int(round(float(v))) for v in fingerprint.median_shape_after_crop[tf_idx]),
            gpu_memory_gb=gpu,
            configurations=tuple(configs),
            plugins=imported_plugins(),
            autoseg_version=__version__,
            intensity=tuple(fingerprint.intensity),  # the "ct" normaliser's clipping bounds, mean and std
        )
        return plans, why


def plan_dataset(
    fingerprint: DatasetFingerprint,
    planner: str = "default",
    gpu_memory_gb: float | None = None,
    preset: str | None = None,
    plans_name: str | None = None,
    *,
    network: str | None = None,
    planner_kwargs: Mapping[str, Any] | None = None,
) -> tuple[Plans, list[str]]:
    """Plan with the registered planner `planner` (a class with a `plan` method like DefaultPlanner's), constructed
    with `planner_kwargs` (checked against its signature). plans_name None: see `DefaultPlanner.plan`."""
    made: DefaultPlanner = planners.create(planner, kwargs=planner_kwargs)
    return made.plan(fingerprint, gpu_memory_gb=gpu_memory_gb, preset=preset, plans_name=plans_name, network=network)


# ---- file-level entry points (the planner classes above never read files) --------------------------------------------
def load_fingerprint_file(path) -> DatasetFingerprint:
    """An autoseg fingerprint, or nnU-Net's dataset_fingerprint.json (with its dataset.json beside it)."""
    path = Path(path)
    try:
        data = load_json(path)
    except ValueError as exc:
        raise FingerprintError(str(exc)) from exc
    return from_nnunet(path) if is_nnunet_fingerprint(data) else DatasetFingerprint.load(path)


def plan_and_save(
    fingerprint_path,
    out_path=None,
    planner: str = "default",
    gpu_memory_gb: float | None = None,
    preset: str | None = None,
    plans_name: str | None = None,
    overrides: dict | None = None,
    *,
    network: str | None = None,
) -> tuple[Plans, list[str]]:
    """Load a fingerprint, plan, apply `--set` overrides (as variant `plans_name`), save to `out_path` if given."""
    fp = load_fingerprint_file(fingerprint_path)
    base_name = None if overrides else plans_name
    plans, why = plan_dataset(fp, planner, gpu_memory_gb, preset, base_name, network=network)
    if overrides:
        plans, notes = apply_overrides(plans, overrides, plans_name)
        why += [f"--set {n}" for n in notes]
    if out_path is not None:
        plans.save(out_path)
    return plans, why
