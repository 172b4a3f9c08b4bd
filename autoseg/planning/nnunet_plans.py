"""nnU-Net v2's plans.json and dataset.json as autoseg's typed plans and label description.

One configuration of an nnU-Net plans file (``configurations[name]``, with ``inherits_from`` resolved) becomes an
autoseg `Configuration` inside a `Plans` of its own, field by field:

    transpose_forward / _backward              -> Plans.transpose (the backward one must be its inverse)
    foreground_intensity_properties_per_channel -> Plans.intensity (the "ct" scheme's statistics; else the
                                                  dataset_fingerprint.json's)
    spacing, patch_size, median_image_size_in_voxels, batch_size, batch_dice -> the same fields
    normalization_schemes + use_mask_for_norm   -> normalization (ZScoreNormalization -> zscore, CTNormalization ->
                                                  ct, RescaleTo01Normalization -> rescale_to_0_1,
                                                  RGBTo01Normalization -> rgb_to_0_1, NoNormalization -> none)
    resampling_fn_{data,seg,probabilities}_kwargs -> Resampling orders (order, order_z; force_separate_z null: the
                                                  separate-z rule with threshold 3, false: never separate)
    architecture (or the pre-2.4 flat fields)   -> NetworkSpec (autoseg.networks.nnunet)
    (nnU-Net's export resamples logits)         -> NnunetConfiguration.log_space_export

What autoseg cannot reproduce is refused with a PlansError naming the file and the field: another resampling
function (e.g. the torch resampling of some newer presets), a cascade stage (nnU-Net itself needs the previous
stage's predictions passed in), a forced separate z, region-based labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoseg.errors import AutosegError, PlansError
from autoseg.fingerprint.fingerprint import IntensityStats
from autoseg.networks.nnunet import architecture_of, network_from_nnunet
from autoseg.planning.plans import SCHEMA_VERSION, Configuration, NetworkSpec, Plans, Resampling


@dataclass(frozen=True)
class NnunetConfiguration(Configuration):
    """A configuration read from nnU-Net plans. nnU-Net exports by resampling the logits, so this one's export
    resamples log-probabilities (`autoseg.inference.export`: the same argmax, and the same softmax afterwards).
    Never written to plans.json: nnU-Net model folders are read in place."""

    log_space_export: bool = True


NORMALIZATION = {
    "ZScoreNormalization": "zscore",
    "CTNormalization": "ct",
    "NoNormalization": "none",
    "RescaleTo01Normalization": "rescale_to_0_1",
    "RGBTo01Normalization": "rgb_to_0_1",
}
RESAMPLING_FUNCTION = "resample_data_or_seg_to_shape"
ANISOTROPY_THRESHOLD = 3.0  # nnU-Net's ANISO_THRESHOLD


def resolve_configuration(plans: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    """plans["configurations"][name] with its ``inherits_from`` chain merged in (the child's fields win)."""
    configs = plans.get("configurations")
    if not isinstance(configs, Mapping) or name not in configs:
        known = ", ".join(configs) if isinstance(configs, Mapping) else "none"
        raise PlansError(f"{where}: no configuration {name!r} (available: {known})")
    chain, current = [], name
    while current is not None:
        if current in chain:
            raise PlansError(f"{where}: configurations inherit from each other in a circle: {' -> '.join(chain)}")
        if current not in configs:
            raise PlansError(f"{where}: configuration {chain[-1]!r} inherits from unknown {current!r}")
        chain.append(current)
        current = configs[current].get("inherits_from")
    merged: dict[str, Any] = {}
    for link in reversed(chain):
        merged.update(configs[link])
    merged.pop("inherits_from", None)
    return merged


def _resampling(conf: Mapping[str, Any], where: str) -> Resampling:
    orders, order_z, forced, thresholds = {}, set(), set(), set()
    for kind, default in (("data", 3), ("seg", 1), ("probabilities", 1)):
        fn = conf.get(f"resampling_fn_{kind}", RESAMPLING_FUNCTION)
        if str(fn).rsplit(".", 1)[-1] != RESAMPLING_FUNCTION:
            raise PlansError(
                f"{where}: field resampling_fn_{kind} {fn!r} is not supported (autoseg reproduces "
                f"{RESAMPLING_FUNCTION}, the default of nnU-Net's plans)"
            )
        kw = conf.get(f"resampling_fn_{kind}_kwargs") or {}
        orders[kind] = int(kw.get("order", default))
        order_z.add(int(kw.get("order_z", 0)))
        forced.add(kw.get("force_separate_z"))
        thresholds.add(float(kw.get("separate_z_anisotropy_threshold", ANISOTROPY_THRESHOLD)))
    if len(order_z) > 1 or len(forced) > 1 or len(thresholds) > 1:
        raise PlansError(
            f"{where}: fields resampling_fn_*_kwargs differ in order_z / force_separate_z / threshold between data, "
            "segmentations and probabilities; autoseg uses one setting for all three"
        )
    force = forced.pop()
    if force is True:
        raise PlansError(f"{where}: field resampling_fn_*_kwargs.force_separate_z true is not supported")
    threshold = float("inf") if force is False else thresholds.pop()
    return Resampling(orders["data"], orders["seg"], orders["probabilities"], order_z.pop(), threshold)


def _normalization(conf: Mapping[str, Any], where: str) -> tuple[str, ...]:
    schemes = conf.get("normalization_schemes")
    if not isinstance(schemes, list) or not schemes:
        raise PlansError(f"{where}: field normalization_schemes must list one scheme per channel")
    unknown = [s for s in schemes if str(s).rsplit(".", 1)[-1] not in NORMALIZATION]
    if unknown:
        raise PlansError(
            f"{where}: field normalization_schemes: {', '.join(map(repr, unknown))} not supported "
            f"(supported: {', '.join(NORMALIZATION)})"
        )
    return tuple(NORMALIZATION[str(s).rsplit(".", 1)[-1]] for s in schemes)


def configuration_from_nnunet(plans: Mapping[str, Any], name: str, where: str) -> Configuration:
    conf = resolve_configuration(plans, name, where)
    here = f"{where}: configuration {name!r}"
    if conf.get("previous_stage"):
        raise PlansError(
            f"{here} is a cascade stage (previous_stage {conf['previous_stage']!r}); nnU-Net cascades are not "
            "supported (nnU-Net itself needs the previous stage's predictions passed in)"
        )
    try:
        network = NetworkSpec(*network_from_nnunet(architecture_of(conf, here), here))
        patch = tuple(int(p) for p in conf["patch_size"])
        median = conf.get("median_image_size_in_voxels", patch)
        return NnunetConfiguration(
            name=name,
            data_identifier=str(conf.get("data_identifier", f"{plans.get('plans_name', 'nnUNetPlans')}_{name}")),
            spacing=tuple(float(s) for s in conf["spacing"]),
            patch_size=patch,
            median_shape=tuple(int(round(float(m))) for m in median),
            batch_size=int(conf.get("batch_size", 2)),
            batch_dice=bool(conf.get("batch_dice", False)),
            normalization=_normalization(conf, here),
            use_mask_for_norm=tuple(bool(u) for u in conf.get("use_mask_for_norm", [])),
            network=network,
            resampling=_resampling(conf, here),
        )
    except KeyError as exc:
        raise PlansError(f"{here}: field {exc.args[0]} missing") from exc
    except PlansError as exc:
        if where in str(exc):
            raise
        raise PlansError(f"{where}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise PlansError(f"{here}: {exc}") from exc


def intensity_from_nnunet(properties: Any, channels: int, where: str) -> tuple[IntensityStats, ...] | None:
    """foreground_intensity_properties_per_channel ({"0": {mean, median, std, min, max, percentile_00_5,
    percentile_99_5}, ...}) -> one IntensityStats per channel; None when absent."""
    if not isinstance(properties, Mapping):
        return None
    try:
        return tuple(
            IntensityStats(**{k: float(properties[str(c)][k]) for k in IntensityStats.__dataclass_fields__})
            for c in range(channels)
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PlansError(f"{where}: foreground_intensity_properties_per_channel lacks {exc}") from exc


def plans_from_nnunet(
    plans: Mapping[str, Any], configuration: str, where: str | Path, fingerprint: Mapping[str, Any] | None = None
) -> Plans:
    """The autoseg Plans (holding just `configuration`) of an nnU-Net plans.json's content; `fingerprint`: the
    dataset_fingerprint.json content, whose intensity statistics are used when the plans hold none."""
    where = str(where)
    conf = configuration_from_nnunet(plans, configuration, where)
    forward = tuple(int(a) for a in plans.get("transpose_forward", (0, 1, 2)))
    backward = tuple(int(a) for a in plans.get("transpose_backward", forward))
    if sorted(forward) != [0, 1, 2] or tuple(forward.index(i) for i in range(3)) != backward:
        raise PlansError(f"{where}: transpose_backward {list(backward)} is not the inverse of {list(forward)}")
    channels = len(conf.normalization)
    key = "foreground_intensity_properties_per_channel"
    intensity = intensity_from_nnunet(plans.get(key), channels, where)
    if intensity is None and fingerprint is not None:
        intensity = intensity_from_nnunet(fingerprint.get(key), channels, f"{where} (dataset_fingerprint.json)")
    spacing = plans.get("original_median_spacing_after_transp", [1.0, 1.0, 1.0])
    shape = plans.get("original_median_shape_after_transp", [1, 1, 1])
    try:
        return Plans(
            schema_version=SCHEMA_VERSION,
            name=str(plans.get("plans_name", "nnUNetPlans")),
            dataset=str(plans.get("dataset_name", "nnU-Net dataset")),
            planner=f"nnU-Net {plans.get('experiment_planner_used', 'ExperimentPlanner')}",
            transpose=forward,
            original_median_spacing=tuple(float(s) for s in spacing),
            original_median_shape=tuple(int(round(float(s))) for s in shape),
            gpu_memory_gb=8.0,
            configurations=(conf,),
            intensity=intensity,
        )
    except AutosegError as exc:
        raise PlansError(f"{where}: {exc}") from exc


def labels_from_nnunet(dataset: Mapping[str, Any], where: str | Path) -> dict[str, int]:
    """dataset.json's labels without the ignore label (the network has no output for it); region-based labels
    (lists of values, regions_class_order) are refused."""
    labels = dataset.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise PlansError(f"{where}: field labels missing")
    regions = [k for k, v in labels.items() if isinstance(v, (list, tuple))]
    if regions or "regions_class_order" in dataset:
        raise PlansError(
            f"{where}: region-based labels ({', '.join(regions) or 'regions_class_order'}) are not supported yet "
            "for nnU-Net models (their sigmoid outputs need regions_class_order)"
        )
    bad = [k for k, v in labels.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0]
    if bad:
        raise PlansError(f"{where}: field labels: {', '.join(bad)} must map to non-negative integers")
    return {str(k): int(v) for k, v in labels.items() if k != "ignore"}


def channels_from_nnunet(dataset: Mapping[str, Any], where: str | Path) -> tuple[str, ...]:
    channels = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(channels, Mapping) or not channels:
        raise PlansError(f"{where}: field channel_names missing")
    try:
        return tuple(str(channels[str(i)]) for i in range(len(channels)))
    except KeyError as exc:
        raise PlansError(f"{where}: field channel_names must have keys 0..{len(channels) - 1}") from exc
