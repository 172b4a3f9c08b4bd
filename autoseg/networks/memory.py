"""The planner's GPU-memory proxy: feature-map voxels of one forward pass (no torch, pure integer arithmetic).

`estimate_feature_map_voxels` reproduces the semantics of nnU-Net's ``compute_conv_feature_map_size`` for its
PlainConvUNet ("unet") and ResidualEncoderUNet ("resenc_unet"), so the reference values nnU-Net calibrated
(560e6 3D / 85e6 2D at 8 GB for the plain U-Net, 680e6 / 135e6 for ResEnc M, ...) apply unchanged.

What is counted, per sample (batch size 1), as ``channels x output voxels`` of each layer:

* every convolution of the encoder: the plain U-Net's ``n_conv_per_stage[s]`` convs of stage ``s``; the residual
  encoder's stem conv (features[0] channels at full resolution) and, per residual block, its two convs plus the
  shortcut projection when the shortcut is not the identity (stride != 1 or a channel change; one entry of
  ``features[s]`` x output voxels, whether it is a 1x1 conv, an average pool or both);
* every convolution of the decoder (``n_conv_per_stage_decoder[s]`` convs, ``features[n-2-s]`` channels);
* every transposed convolution (``features[n-2-s]`` channels at the skip's resolution);
* the segmentation head (``num_classes`` channels) at every decoder resolution when ``deep_supervision`` is True
  (the default, what training runs), else only at full resolution. nnU-Net's planner instantiates its networks
  without deep supervision, so its estimate (and therefore autoseg's planner, which passes
  ``deep_supervision=False`` to agree with nnU-Net's batch sizes) counts the full-resolution head only.

Output sizes use floor division by the strides (``size // stride`` per axis), as nnU-Net does; norms,
nonlinearities, concatenations, the input and weights are not counted. `in_channels` does not change the count
(it is accepted for interface stability and for custom networks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

SUPPORTED = ("unet", "resenc_unet")


def _vox(channels: int, size: Sequence[int]) -> int:
    return int(channels) * math.prod(int(s) for s in size)


def _down(size: Sequence[int], stride: Sequence[int]) -> list[int]:
    return [int(a) // int(b) for a, b in zip(size, stride)]


def stage_sizes(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[list[int]]:
    """Spatial size at the output of every encoder stage (stage 0 = patch size when strides[0] is all ones)."""
    sizes, cur = [], [int(p) for p in patch_size]
    for s in strides:
        cur = _down(cur, s)
        sizes.append(cur)
    return sizes


def _plain_encoder(params: Mapping[str, Any], patch_size: Sequence[int]) -> int:
    total, cur = 0, list(patch_size)
    for feats, stride, n_conv in zip(params["features_per_stage"], params["strides"], params["n_conv_per_stage"]):
        cur = _down(cur, stride)
        total += int(n_conv) * _vox(feats, cur)
    return total


def _residual_encoder(params: Mapping[str, Any], patch_size: Sequence[int]) -> int:
    feats = params["features_per_stage"]
    n_blocks = params.get("n_blocks_per_stage", params["n_conv_per_stage"])
    total = _vox(feats[0], patch_size)  # stem conv, no stride
    cur, ch_in = list(patch_size), int(feats[0])
    for f, stride, blocks in zip(feats, params["strides"], n_blocks):
        out = _down(cur, stride)
        for b in range(int(blocks)):
            total += 2 * _vox(f, out)  # conv1 (carries the stride in the first block) + conv2
            if b == 0 and (ch_in != int(f) or out != cur):
                total += _vox(f, out)  # shortcut projection / pooling
        cur, ch_in = out, int(f)
    return total


def _decoder(params: Mapping[str, Any], patch_size: Sequence[int], num_classes: int, all_heads: bool) -> int:
    feats = params["features_per_stage"]
    n_stages = len(feats)
    n_dec = params.get("n_conv_per_stage_decoder", [2] * (n_stages - 1))
    sizes = stage_sizes(patch_size, params["strides"])
    total = 0
    for s in range(n_stages - 1):  # s = 0 is the decoder stage right above the bottleneck
        level = n_stages - 2 - s
        ch, size = int(feats[level]), sizes[level]
        total += int(n_dec[s]) * _vox(ch, size)  # decoder convs
        total += _vox(ch, size)  # transposed conv
        if all_heads or level == 0:
            total += _vox(num_classes, size)  # seg head (deep supervision: every level)
    return total


def estimate_feature_map_voxels(
    network_name: str,
    params: Mapping[str, Any],
    patch_size: Sequence[int],
    in_channels: int,
    num_classes: int,
    deep_supervision: bool = True,
) -> int:
    """Feature-map voxels of one sample's forward pass (see the module docstring for exactly what is counted).

    network_name: "unet" or "resenc_unet"; params: NetworkSpec.params (n_conv_per_stage holds the blocks per stage
    for "resenc_unet"); patch_size: spatial size in the plans' axis order; deep_supervision: count the seg head at
    every decoder resolution (True) or only at full resolution (False, nnU-Net's planner).
    """
    if network_name not in SUPPORTED:
        raise ValueError(f"no feature-map estimate for network {network_name!r}; known: {', '.join(SUPPORTED)}")
    if len(patch_size) != len(params["strides"][0]):
        raise ValueError(f"patch_size {list(patch_size)} does not match the {len(params['strides'][0])}-D strides")
    encoder = _plain_encoder if network_name == "unet" else _residual_encoder
    del in_channels  # the count is of outputs only, like nnU-Net's
    return encoder(params, patch_size) + _decoder(params, patch_size, int(num_classes), deep_supervision)
