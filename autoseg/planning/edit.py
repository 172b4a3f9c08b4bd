"""Named plans variants without hand-editing JSON: `--set 3d_fullres.batch_size=4 --name bs4`.

A key is ``CONFIGURATION.FIELD`` or a dotted path below it (``3d_fullres.network.params.n_conv_per_stage``); the
value is JSON. The edited configuration is rebuilt through the same validation as a loaded plans file, so a wrong
field, a wrong type or a patch not divisible by the strides is an error naming the configuration and the field.
Edits of 3d_fullres also apply to 3d_cascade_fullres (which is 3d_fullres plus the low-resolution predictions).
A change of how data are preprocessed (spacing, normalisation, resampling) gets its own data_identifier, so the
variant never reuses arrays preprocessed for other settings.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from autoseg.errors import PlansError
from autoseg.planning.plans import Configuration, Plans
from autoseg.serialization import from_json, to_json

PREPROCESSING_FIELDS = ("spacing", "normalization", "normalization_kwargs", "use_mask_for_norm", "resampling")
LINK_FIELDS = ("name", "previous_stage", "next_stage")
FOLLOWERS = {"3d_fullres": ("3d_cascade_fullres",)}


def _set_path(data: dict, path: list[str], value: Any, where: str) -> None:
    node = data
    for i, key in enumerate(path):
        last = i == len(path) - 1
        is_params = i > 0 and path[i - 1] == "params"  # network parameters are free-form: new keys are allowed
        if not isinstance(node, dict) or (key not in node and not (last and is_params)):
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "none (not an object)"
            raise PlansError(f"{where}: unknown field {'.'.join(path[: i + 1])!r}; fields here: {known}")
        if last:
            node[key] = value
        else:
            node = node[key]


def edit_configuration(cfg: Configuration, changes: Mapping[str, Any]) -> Configuration:
    """Apply {dotted field path: value} to one configuration; validated like a loaded plans file."""
    data = copy.deepcopy(to_json(cfg))
    for path, value in changes.items():
        if path.split(".")[0] in LINK_FIELDS:
            raise PlansError(f"configuration {cfg.name!r}: field {path!r} cannot be changed with --set")
        _set_path(data, path.split("."), value, f"configuration {cfg.name!r}")
    try:
        return from_json(Configuration, data)
    except ValueError as exc:
        raise PlansError(f"configuration {cfg.name!r}: field {exc}") from exc


def apply_overrides(plans: Plans, overrides: Mapping[str, Any], name: str) -> tuple[Plans, list[str]]:
    """Return the variant `name` of `plans` with `overrides` ({"3d_fullres.batch_size": 4, ...}) applied."""
    if not name or name == plans.name:
        raise PlansError(f"a plans variant needs a new name (--name), not {name!r}")
    by_cfg: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        cfg, sep, path = key.partition(".")
        if not sep or not path:
            raise PlansError(f"--set {key}: expected CONFIGURATION.FIELD=VALUE, e.g. 3d_fullres.batch_size=4")
        plans.configuration(cfg)  # raises, listing the available configurations
        for target in (cfg, *FOLLOWERS.get(cfg, ())):
            if target in plans.names():
                by_cfg.setdefault(target, {})[path] = value
    notes, configs = [], []
    for cfg in plans.configurations:
        changes = by_cfg.get(cfg.name)
        if not changes:
            configs.append(cfg)
            continue
        new = edit_configuration(cfg, changes)
        touched = {p.split(".")[0] for p in changes}
        if touched & set(PREPROCESSING_FIELDS) and "data_identifier" not in touched:
            new = replace(new, data_identifier=f"{cfg.data_identifier}_{name}")
            notes.append(f"{cfg.name}: preprocessing changed -> own data_identifier {new.data_identifier!r}")
        notes += [f"{cfg.name}: {p} = {v!r}" for p, v in changes.items()]
        configs.append(new)
    try:
        variant = replace(plans, name=name, configurations=tuple(configs))
    except PlansError as exc:
        raise PlansError(f"plans variant {name!r}: {exc}") from exc
    return variant, notes
