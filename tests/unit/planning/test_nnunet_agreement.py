"""Agreement with nnU-Net v2's own planner on every public reference case (../shared/reference/planner_cases).

For each case and each nnU-Net plans file there (default ExperimentPlanner; ResEnc M), autoseg plans from the same
fingerprint + dataset.json and must match per configuration: target spacing, patch size, batch size, strides,
kernel sizes, features per stage, blocks/convs per stage, normalisation, use_mask_for_norm, batch_dice and the
median image size; per plans: transpose and which configurations exist (3d_lowres or not).

Differences we keep on purpose go in ALLOWED (case, planner, configuration, field) -> reason, and in
docs/planning.md ("Deliberate differences from nnU-Net"). There are none today.

`python tests/unit/planning/test_nnunet_agreement.py` prints the agreement table (markdown) for docs/planning.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autoseg.fingerprint.nnunet_compat import from_nnunet
from autoseg.planning.planner import plan_dataset

CASES_DIR = Path(__file__).resolve().parents[4] / "shared" / "reference" / "planner_cases"
PRESET_BY_PLANNER = {"ExperimentPlanner": None, "nnUNetPlannerResEncM": "resenc-m"}
NORM_NAMES = {
    "CTNormalization": "ct",
    "ZScoreNormalization": "zscore",
    "NoNormalization": "none",
    "RescaleTo01Normalization": "rescale_to_0_1",
    "RGBTo0_1Normalization": "rgb_to_0_1",
}
NETWORK_NAMES = {"PlainConvUNet": "unet", "ResidualEncoderUNet": "resenc_unet"}
ALLOWED: dict[tuple[str, str, str, str], str] = {}  # (case, planner, configuration, field) -> documented reason


def reference_files() -> list[Path]:
    if not CASES_DIR.is_dir():
        pytest.fail(f"reference planner cases missing: {CASES_DIR}")
    return sorted(CASES_DIR.glob("*/nnunet_plans_*.json"))


def planner_of(path: Path) -> str:
    return path.stem.removeprefix("nnunet_plans_")


def compare_configuration(ours, ref: dict) -> dict[str, tuple]:
    """field -> (ours, nnU-Net's) for every field that differs."""
    arch = ref["architecture"]["arch_kwargs"]
    p = ours.network.params
    pairs = {
        "patch_size": (list(ours.patch_size), ref["patch_size"]),
        "batch_size": (ours.batch_size, ref["batch_size"]),
        "strides": (p["strides"], arch["strides"]),
        "kernel_sizes": (p["kernel_sizes"], arch["kernel_sizes"]),
        "features_per_stage": (p["features_per_stage"], arch["features_per_stage"]),
        "n_conv_per_stage": (p["n_conv_per_stage"], arch.get("n_blocks_per_stage", arch.get("n_conv_per_stage"))),
        "n_conv_per_stage_decoder": (p["n_conv_per_stage_decoder"], arch["n_conv_per_stage_decoder"]),
        "network": (ours.network.name, NETWORK_NAMES[ref["architecture"]["network_class_name"].split(".")[-1]]),
        "normalization": (list(ours.normalization), [NORM_NAMES[n] for n in ref["normalization_schemes"]]),
        "use_mask_for_norm": (list(ours.use_mask_for_norm), ref["use_mask_for_norm"]),
        "batch_dice": (ours.batch_dice, ref["batch_dice"]),
        "median_shape": (list(ours.median_shape), [int(round(v)) for v in ref["median_image_size_in_voxels"]]),
    }
    diffs = {k: v for k, v in pairs.items() if v[0] != v[1]}
    if not np.allclose(ours.spacing, ref["spacing"], rtol=1e-9, atol=0):
        diffs["spacing"] = (list(ours.spacing), ref["spacing"])
    return diffs


def agreement(path: Path) -> dict[str, dict[str, tuple]]:
    """configuration (or '*' for plans-level fields) -> differing fields."""
    ref = json.loads(path.read_text())
    fp = from_nnunet(path.parent / "fingerprint.json")
    plans, _ = plan_dataset(fp, preset=PRESET_BY_PLANNER[planner_of(path)])
    out: dict[str, dict[str, tuple]] = {}
    ref_cfgs = ref["configurations"]
    top = {}
    if list(plans.transpose) != ref["transpose_forward"]:
        top["transpose"] = (list(plans.transpose), ref["transpose_forward"])
    if sorted(plans.names()) != sorted(ref_cfgs):
        top["configurations"] = (sorted(plans.names()), sorted(ref_cfgs))
    out["*"] = top
    for name, rc in ref_cfgs.items():
        if "architecture" in rc and name in plans.names():
            out[name] = compare_configuration(plans.configuration(name), rc)
    cascade = ref_cfgs.get("3d_cascade_fullres")
    if cascade and "3d_cascade_fullres" in plans.names():
        c = plans.configuration("3d_cascade_fullres")
        ok = (
            c.previous_stage == cascade["previous_stage"]
            and c.patch_size == plans.configuration("3d_fullres").patch_size
        )
        out["3d_cascade_fullres"] = {} if ok else {"previous_stage": (c.previous_stage, cascade["previous_stage"])}
    return out


def unexplained(path: Path) -> list[str]:
    case, planner = path.parent.name, planner_of(path)
    return [
        f"{case} {planner} {cfg}.{field}: autoseg {pair[0]} vs nnU-Net {pair[1]}"
        for cfg, diffs in agreement(path).items()
        for field, pair in diffs.items()
        if (case, planner, cfg, field) not in ALLOWED
    ]


def test_every_public_case_and_planner_is_covered():
    files = reference_files()
    assert len(files) == 29  # 10 MSD-like x (default, ResEnc M) + 9 odd cases x default
    assert {planner_of(f) for f in files} == set(PRESET_BY_PLANNER)


@pytest.mark.parametrize("path", reference_files(), ids=lambda p: f"{p.parent.name}-{planner_of(p)}")
def test_planner_agrees_with_nnunet(path):
    assert unexplained(path) == []


def test_comparison_detects_a_difference():
    path = CASES_DIR / "msd05_prostate" / "nnunet_plans_ExperimentPlanner.json"
    ref = json.loads(path.read_text())["configurations"]["3d_fullres"]
    plans, _ = plan_dataset(from_nnunet(path.parent / "fingerprint.json"))
    ref["batch_size"] += 1
    ref["architecture"]["arch_kwargs"]["strides"][1] = [2, 2, 2]
    assert set(compare_configuration(plans.configuration("3d_fullres"), ref)) == {"batch_size", "strides"}


def markdown_table() -> str:
    """One row per (case, planner); per configuration "match", the differing fields, or "-" (not planned by either)."""
    cols = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")
    rows = ["| case | planner | transpose / configurations | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * 4]
    for path in reference_files():
        res = agreement(path)
        cells = []
        for cfg in ("*", *cols):
            diffs = res.get(cfg)
            text = (
                "-"
                if diffs is None
                else "match"
                if not diffs
                else ", ".join(f"{k}: {a} vs {b}" for k, (a, b) in diffs.items())
            )
            cells.append(text)
        rows.append(f"| {path.parent.name} | {planner_of(path)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
