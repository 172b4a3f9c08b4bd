"""autoseg.networks.memory.estimate_feature_map_voxels on hand-counted networks and nnU-Net's own counts."""

from __future__ import annotations

import json

import pytest
from test_nnunet_agreement import CASES_DIR

from autoseg.errors import ConfigError
from autoseg.networks.memory import estimate_feature_map_voxels


def params(features, blocks, dec, dims=2):
    n = len(features)
    return {
        "n_stages": n,
        "features_per_stage": list(features),
        "kernel_sizes": [[3] * dims] * n,
        "strides": [[1] * dims] + [[2] * dims] * (n - 1),
        "n_conv_per_stage": list(blocks),
        "n_conv_per_stage_decoder": [dec] * (n - 1),
    }


def test_plain_unet_hand_count_with_and_without_deep_supervision():
    p = params((2, 4, 8), (1, 1, 1), 1)
    # encoder 2*64 + 4*16 + 8*4 = 224; decoder level 1: conv 64 + transposed 64 + head 3*16; level 0: 128 + 128 + 192
    assert estimate_feature_map_voxels("unet", p, (8, 8), 1, 3) == 224 + 176 + 448
    assert estimate_feature_map_voxels("unet", p, (8, 8), 1, 3, deep_supervision=False) == 224 + 128 + 448


def test_residual_encoder_hand_count():
    p = params((2, 4), (1, 2), 1)
    # stem 2*16; stage 0: one block, 2 convs 2*16 each, identity shortcut; stage 1: block 0 strided with a shortcut
    # projection (3 x 4*4), block 1 (2 x 4*4); decoder: transposed 2*16 + conv 2*16 + head 3*16
    assert estimate_feature_map_voxels("resenc_unet", p, (4, 4), 1, 3) == 32 + 64 + 48 + 32 + 112


@pytest.mark.parametrize(
    "plans_file,config,channels,expected",
    [  # nnU-Net 2.8.1's compute_conv_feature_map_size for these plans (network built as its planner builds it)
        ("msd05_prostate/nnunet_plans_ExperimentPlanner.json", "3d_fullres", 2, 483315200),
        ("msd03_liver/nnunet_plans_nnUNetPlannerResEncM.json", "2d", 1, 129703936),
    ],
)
def test_matches_nnunet_planner_count(plans_file, config, channels, expected):
    cfg = json.loads((CASES_DIR / plans_file).read_text())["configurations"][config]
    arch = cfg["architecture"]
    name = {"PlainConvUNet": "unet", "ResidualEncoderUNet": "resenc_unet"}[arch["network_class_name"].split(".")[-1]]
    kw = dict(arch["arch_kwargs"])
    kw["n_conv_per_stage"] = kw.get("n_blocks_per_stage", kw.get("n_conv_per_stage"))
    got = estimate_feature_map_voxels(name, kw, cfg["patch_size"], channels, 3, deep_supervision=False)
    assert got == expected


def test_unknown_network_and_wrong_dimensionality():
    with pytest.raises(ConfigError, match="no feature-map estimate for network 'vnet'.*estimate: resenc_unet, unet"):
        estimate_feature_map_voxels("vnet", params((2, 4), (1, 1), 1), (4, 4), 1, 2)
    with pytest.raises(ValueError, match="does not match the 2-D strides"):
        estimate_feature_map_voxels("unet", params((2, 4), (1, 1), 1), (4, 4, 4), 1, 2)
