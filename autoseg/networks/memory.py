"""The planner's GPU-memory proxy: feature-map voxels of one forward pass (no torch, pure integer arithmetic).

Every network the planner can size registers a memory model here, beside its builder in `autoseg.networks.build`:
an estimate ``(params, patch_size, in_channels, num_classes, deep_supervision) -> feature-map voxels`` and the
reference values that say how many such voxels fit how much GPU memory (`MemoryReference`)::

    from autoseg.networks.memory import MemoryReference, estimate_feature_map_voxels, register_memory_estimate

    @register_memory_estimate("my_net", reference="unet")  # counts like the plain U-Net: reuse its reference values
    def my_net_voxels(params, patch_size, in_channels, num_classes, deep_supervision=True) -> int:
        return 2 * estimate_feature_map_voxels("unet", params, patch_size, in_channels, num_classes, deep_supervision)

    register_memory_estimate("other_net", other_voxels, reference=MemoryReference(voxels_3d=1e9, voxels_2d=2e8))

The planner asks `network_memory(name)` for the plans' network; a network without one is a ConfigError that lists
the networks that have one. The built-in U-Nets register theirs the same way, below.

The built-in estimates reproduce the semantics of nnU-Net's ``compute_conv_feature_map_size`` for its PlainConvUNet
("unet") and ResidualEncoderUNet ("resenc_unet"), so the reference values nnU-Net calibrated (560e6 3D / 85e6 2D at
8 GB for the plain U-Net, 680e6 / 135e6 for ResEnc M; the planner's presets may state their own) apply unchanged.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autoseg.errors import ConfigError
from autoseg.registry import Registry

FeatureMapEstimate = Callable[[Mapping[str, Any], Sequence[int], int, int, bool], int]


@dataclass(frozen=True)
class MemoryReference:
    """How many feature-map voxels (of the network's own estimate) fit `gpu_gb` GB of GPU memory at the reference
    batch size: `voxels_3d` at `batch_3d` for 3D patches, `voxels_2d` at `batch_2d` for 2D ones."""

    voxels_3d: float
    voxels_2d: float
    gpu_gb: float = 8.0
    batch_3d: int = 2
    batch_2d: int = 12

    def __post_init__(self) -> None:
        if min(self.voxels_3d, self.voxels_2d, self.gpu_gb) <= 0 or min(self.batch_3d, self.batch_2d) < 1:
            raise ConfigError(f"memory reference values must be positive, got {self}")

    def voxels(self, ndim: int) -> float:
        return self.voxels_3d if ndim == 3 else self.voxels_2d

    def batch(self, ndim: int) -> int:
        return self.batch_3d if ndim == 3 else self.batch_2d


@dataclass(frozen=True)
class NetworkMemory:
    """A network's memory model: its feature-map estimate and the reference values calibrated for that estimate."""

    estimate: FeatureMapEstimate
    reference: MemoryReference


memory_estimates: Registry[NetworkMemory] = Registry("network memory estimate")


def register_memory_estimate(
    name: str, estimate: FeatureMapEstimate | None = None, *, reference: MemoryReference | str = "unet"
) -> Callable[[FeatureMapEstimate], FeatureMapEstimate] | FeatureMapEstimate:
    """Register the memory estimate of network `name` (usable as a decorator, like ``networks.register``).

    `reference`: the network's own MemoryReference, or the name of a network whose reference values to reuse
    (default "unet": 560e6 3D / 85e6 2D voxels at 8 GB, batch 2 / 12), which fits an estimate that counts the way
    `estimate_feature_map_voxels` counts. Undo with ``memory_estimates.unregister(name)``."""
    ref = memory_estimates.get(reference).reference if isinstance(reference, str) else reference
    if not isinstance(ref, MemoryReference):
        raise ConfigError(f"memory estimate of {name!r}: reference must be a MemoryReference or a network name")

    def add(fn: FeatureMapEstimate) -> FeatureMapEstimate:
        memory_estimates.register(name, NetworkMemory(fn, ref))
        return fn

    return add(estimate) if estimate is not None else add


def network_memory(name: str) -> NetworkMemory:
    """The registered memory model of network `name`; ConfigError listing the networks that have one if none."""
    if name not in memory_estimates:
        known = ", ".join(memory_estimates.names()) or "none"
        raise ConfigError(
            f"no feature-map estimate for network {name!r}, so the planner cannot size it. Networks with an "
            f"estimate: {known}. Register one beside the network's builder with "
            f"autoseg.networks.memory.register_memory_estimate({name!r}, ...) in your plugin (--plugin MODULE)"
        )
    return memory_estimates.get(name)


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


def _check_dims(params: Mapping[str, Any], patch_size: Sequence[int]) -> None:
    if len(patch_size) != len(params["strides"][0]):
        raise ValueError(f"patch_size {list(patch_size)} does not match the {len(params['strides'][0])}-D strides")


@register_memory_estimate("unet", reference=MemoryReference(voxels_3d=560e6, voxels_2d=85e6))
def plain_unet_voxels(
    params: Mapping[str, Any],
    patch_size: Sequence[int],
    in_channels: int,
    num_classes: int,
    deep_supervision: bool = True,
) -> int:
    """The plain U-Net's count (in_channels does not change it: outputs only, like nnU-Net's)."""
    _check_dims(params, patch_size)
    return _plain_encoder(params, patch_size) + _decoder(params, patch_size, int(num_classes), deep_supervision)


@register_memory_estimate("resenc_unet", reference=MemoryReference(voxels_3d=680e6, voxels_2d=135e6))
def residual_unet_voxels(
    params: Mapping[str, Any],
    patch_size: Sequence[int],
    in_channels: int,
    num_classes: int,
    deep_supervision: bool = True,
) -> int:
    """The residual-encoder U-Net's count (reference values: nnU-Net's ResEnc M, 680e6 / 135e6 at 8 GB)."""
    _check_dims(params, patch_size)
    return _residual_encoder(params, patch_size) + _decoder(params, patch_size, int(num_classes), deep_supervision)


def estimate_feature_map_voxels(
    network_name: str,
    params: Mapping[str, Any],
    patch_size: Sequence[int],
    in_channels: int,
    num_classes: int,
    deep_supervision: bool = True,
) -> int:
    """Feature-map voxels of one sample's forward pass, by the estimate registered for `network_name`.

    params: NetworkSpec.params (for the built-ins, n_conv_per_stage holds the blocks per stage of "resenc_unet");
    patch_size: spatial size in the plans' axis order; deep_supervision: count the seg head at every decoder
    resolution (True) or only at full resolution (False, nnU-Net's planner). A network without a registered
    estimate is a ConfigError listing those that have one.
    """
    model = network_memory(network_name)
    return int(model.estimate(params, patch_size, int(in_channels), int(num_classes), bool(deep_supervision)))
