"""Plans transferred between datasets (``autoseg plan -d TARGET --transfer-plans-from SOURCE``), so that a network
trained on SOURCE fits TARGET's data and can be fine-tuned on it (``autoseg train --pretrained``).

From the source plans, for every configuration the target plans also have: the network (architecture and its
parameters), patch size, batch size, batch Dice, the cascade links and the axis order (``transpose``), since kernel
sizes and strides are stated in that order. From the target's own plans: target spacing and median shape (re-ordered
into the source's axis order), normalisation (scheme, mask, keyword arguments, intensity statistics) and resampling,
so the target's images are preprocessed as its own planner would, and the network sees intensities and voxel sizes
normalised like the ones it was trained on. Configurations the target plans lack are dropped, with a note. The
input channels and classes are not part of the plans: fine-tuning adapts the first convolution and re-initialises
the segmentation heads when they differ.

nnU-Net's ``nnUNetv2_move_plans_between_datasets`` copies everything, spacing and normalisation of the source
included; here those two follow the target dataset (its own plans would choose them).

When both datasets have the same axis order the target's preprocessed data are reused (same data_identifier);
otherwise the transferred plans get their own data_identifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from autoseg.errors import PlansError
from autoseg.planning.plans import Configuration, Plans


def _reorder(values: Sequence, from_axes: Sequence[int], to_axes: Sequence[int]) -> tuple | None:
    """`values` given along `from_axes` (original axis numbers) re-ordered along `to_axes`; None if they differ."""
    if sorted(from_axes) != sorted(to_axes):
        return None
    return tuple(values[list(from_axes).index(a)] for a in to_axes)


def _transfer_configuration(
    src: Configuration, tgt: Configuration, source: Plans, target: Plans, name: str
) -> tuple[Configuration | None, str]:
    n = src.ndim
    from_axes, to_axes = target.transpose[-n:], source.transpose[-n:]
    spacing = _reorder(tgt.spacing, from_axes, to_axes) if tgt.ndim == n else None
    shape = _reorder(tgt.median_shape, from_axes, to_axes) if tgt.ndim == n else None
    if spacing is None or shape is None:
        return None, f"{src.name}: dropped, its axes differ between the source and the target plans"
    same_order = tuple(target.transpose) == tuple(source.transpose)
    ident = tgt.data_identifier if same_order else f"{tgt.data_identifier}_{name}"
    new = replace(
        src,
        data_identifier=ident,
        spacing=tuple(float(v) for v in spacing),
        median_shape=tuple(int(v) for v in shape),
        normalization=tgt.normalization,
        use_mask_for_norm=tgt.use_mask_for_norm,
        normalization_kwargs=tgt.normalization_kwargs,
        resampling=tgt.resampling,
    )
    note = (
        f"{src.name}: network {src.network.name} ({src.network.params.get('n_stages', '?')} stages), patch "
        f"{list(src.patch_size)}, batch {src.batch_size} from {source.dataset}; spacing {list(new.spacing)} "
        f"(source {list(src.spacing)}), normalisation {list(new.normalization)} from {target.dataset}; "
        f"preprocessed data {ident!r}" + ("" if same_order else " (axis order differs from the target's own plans)")
    )
    return new, note


def transfer_plans(source: Plans, target: Plans, name: str) -> tuple[Plans, list[str]]:
    """The plans `name` for `target.dataset` with `source`'s architecture and patch sizes (module docstring);
    returns them and one note per decision. PlansError if no configuration can be transferred."""
    if len(target.transpose) != len(source.transpose):
        raise PlansError(f"{source.dataset} and {target.dataset} plans have different dimensions")
    configs: dict[str, Configuration] = {}
    notes = [
        f"plans {source.name!r} of {source.dataset} transferred to {target.dataset} as {name!r} "
        f"(axis order {list(source.transpose)} of the source)"
    ]
    for src in source.configurations:
        tgt = next((c for c in target.configurations if c.name == src.name), None)
        if tgt is None:
            notes.append(f"{src.name}: dropped, the target's own plans have no such configuration")
            continue
        new, note = _transfer_configuration(src, tgt, source, target, name)
        notes.append(note)
        if new is not None:
            configs[new.name] = new
    for c in list(configs.values()):  # a cascade whose other stage was dropped is dropped too
        for link in (c.previous_stage, c.next_stage):
            if link is not None and link not in configs:
                notes.append(f"{c.name}: dropped, its cascade stage {link!r} was not transferred")
                configs.pop(c.name, None)
    if not configs:
        raise PlansError(
            f"plans {source.name!r} of {source.dataset}: no configuration ({', '.join(source.names())}) can be "
            f"transferred to {target.dataset} (its own plans have {', '.join(target.names())})"
        )
    plans = replace(
        source,
        name=name,
        dataset=target.dataset,
        original_median_spacing=_reorder(target.original_median_spacing, target.transpose, source.transpose)
        or source.original_median_spacing,
        original_median_shape=_reorder(target.original_median_shape, target.transpose, source.transpose)
        or source.original_median_shape,
        configurations=tuple(configs.values()),
        plugins=tuple(dict.fromkeys((*source.plugins, *target.plugins))),
        intensity=target.intensity,
    )
    if len(source.configurations[0].normalization) != len(target.configurations[0].normalization):
        notes.append(
            f"input channels: {len(source.configurations[0].normalization)} in {source.dataset}, "
            f"{len(target.configurations[0].normalization)} in {target.dataset}; fine-tuning adapts the first "
            "convolution"
        )
    return plans, notes


def default_transfer_name(source_dataset: str, source_plans: str) -> str:
    """Plans name of a transfer when none is given: from_<SourceDataset>[_<plans>] (never overwrites 'default')."""
    return f"from_{source_dataset}" + ("" if source_plans == "default" else f"_{source_plans}")


def transfer_and_save(source_plans_path: Path, target: Plans, name: str, out_path: Path | None) -> tuple[Plans, list]:
    """Load the source plans file, transfer them to `target`'s dataset, save to `out_path` if given."""
    plans, notes = transfer_plans(Plans.load(source_plans_path), target, name)
    if out_path is not None:
        plans.save(out_path)
    return plans, notes
