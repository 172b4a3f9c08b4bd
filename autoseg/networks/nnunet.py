"""nnU-Net v2's networks as autoseg networks: architecture description -> network spec, state-dict key names.

nnU-Net v2 describes a configuration's network in plans.json as ``architecture = {network_class_name, arch_kwargs,
_kw_requires_import}`` (classes of the dynamic_network_architectures package, torch ops by dotted name); plans made
before nnU-Net 2.4 hold the older flat fields (``UNet_class_name``, ``UNet_base_num_features``,
``n_conv_per_stage_encoder``, ``conv_kernel_sizes``, ``pool_op_kernel_sizes``, ``unet_max_num_features``), which
`architecture_of` turns into the same description. `network_from_nnunet` maps it onto autoseg's own U-Nets:

    PlainConvUNet        -> "unet"          (same topology: strided-conv encoder, transposed-conv decoder)
    ResidualEncoderUNet  -> "resenc_unet"   (stem + BasicBlockD stages, the same decoder)

Anything autoseg's networks do not reproduce exactly (another class, dropout, a norm epsilon other than 1e-5, a
LeakyReLU slope other than 0.01, pooling instead of strided convs) is refused with a PlansError naming the field, so
a model is never run with a silently different network.

`map_state_dict` renames dynamic_network_architectures' parameter names to autoseg's (``encoder.stages.1.0.convs.0``
-> ``encoder.stages.1.0``, ``blocks.k`` -> ``k``, ``skip`` -> ``shortcut``, ``transpconvs`` -> ``upsample``,
``seg_layers`` -> ``seg_heads``) and drops the aliases its modules register twice (``all_modules``, the decoder's
reference to the encoder).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from autoseg.errors import PlansError

ARCHITECTURES = {"PlainConvUNet": "unet", "ResidualEncoderUNet": "resenc_unet"}
NORMS = {"InstanceNorm2d": "instance", "InstanceNorm3d": "instance", "BatchNorm2d": "batch", "BatchNorm3d": "batch"}
NONLINS = {"LeakyReLU": "leaky_relu", "ReLU": "relu"}
OLD_FORMAT_FIELDS = (
    "UNet_class_name",
    "UNet_base_num_features",
    "n_conv_per_stage_encoder",
    "n_conv_per_stage_decoder",
    "conv_kernel_sizes",
    "pool_op_kernel_sizes",
    "unet_max_num_features",
)


def _short(name: Any) -> str:
    return str(name).rsplit(".", 1)[-1] if name is not None else "None"


def architecture_of(configuration: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The ``architecture`` entry of an nnU-Net configuration, rebuilt from the pre-2.4 flat fields if needed."""
    if "architecture" in configuration:
        arch = configuration["architecture"]
        if not isinstance(arch, Mapping) or not isinstance(arch.get("arch_kwargs"), Mapping):
            raise PlansError(f"{where}: field architecture must hold network_class_name and arch_kwargs")
        return dict(arch)
    missing = [k for k in OLD_FORMAT_FIELDS if k not in configuration]
    if missing:
        raise PlansError(f"{where}: no field architecture, and the older format's {', '.join(missing)} are missing")
    cls = configuration["UNet_class_name"]
    n = len(configuration["n_conv_per_stage_encoder"])
    dims = len(configuration["conv_kernel_sizes"][0])
    base, cap = int(configuration["UNet_base_num_features"]), int(configuration["unet_max_num_features"])
    blocks = "n_conv_per_stage" if cls == "PlainConvUNet" else "n_blocks_per_stage"
    kwargs = {
        "n_stages": n,
        "features_per_stage": [min(base * 2**i, cap) for i in range(n)],
        "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
        "kernel_sizes": configuration["conv_kernel_sizes"],
        "strides": configuration["pool_op_kernel_sizes"],
        blocks: configuration["n_conv_per_stage_encoder"],
        "n_conv_per_stage_decoder": configuration["n_conv_per_stage_decoder"],
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    return {"network_class_name": cls, "arch_kwargs": kwargs}


def network_from_nnunet(architecture: Mapping[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """(autoseg network name, its params) for an nnU-Net ``architecture`` entry; PlansError for what autoseg's
    networks cannot reproduce exactly (the message names the class or the field)."""
    cls = _short(architecture.get("network_class_name"))
    if cls not in ARCHITECTURES:
        raise PlansError(
            f"{where}: network class {architecture.get('network_class_name')!r} is not supported; autoseg runs "
            f"nnU-Net's {' and '.join(ARCHITECTURES)} (dynamic_network_architectures)"
        )
    kw = dict(architecture["arch_kwargs"])
    problems = []
    dims = len(kw.get("kernel_sizes", [[]])[0]) if kw.get("kernel_sizes") else 0
    if _short(kw.get("conv_op")) != f"Conv{dims}d":
        problems.append(f"conv_op {kw.get('conv_op')!r} (expected Conv{dims}d for {dims}-D kernels)")
    norm = NORMS.get(_short(kw.get("norm_op")))
    if norm is None or not _short(kw.get("norm_op")).endswith(f"{dims}d"):
        problems.append(f"norm_op {kw.get('norm_op')!r} (supported: {', '.join(sorted(NORMS))})")
    norm_kwargs = dict(kw.get("norm_op_kwargs") or {})
    if float(norm_kwargs.get("eps", 1e-5)) != 1e-5 or not norm_kwargs.get("affine", False):
        problems.append(f"norm_op_kwargs {norm_kwargs!r} (supported: eps 1e-05, affine true)")
    if kw.get("dropout_op") is not None:
        problems.append(f"dropout_op {kw.get('dropout_op')!r} (supported: none)")
    nonlin = NONLINS.get(_short(kw.get("nonlin")))
    slope = (kw.get("nonlin_kwargs") or {}).get("negative_slope", 0.01)
    if nonlin is None or (nonlin == "leaky_relu" and float(slope) != 0.01):
        problems.append(
            f"nonlin {kw.get('nonlin')!r} with {kw.get('nonlin_kwargs')!r} (supported: LeakyReLU 0.01, ReLU)"
        )
    if kw.get("pool", "conv") != "conv":
        problems.append(f"pool {kw.get('pool')!r} (supported: 'conv', strided convolutions)")
    if cls == "ResidualEncoderUNet":
        blocks_key = "n_blocks_per_stage"
        if _short(kw.get("block", "BasicBlockD")) != "BasicBlockD":
            problems.append(f"block {kw.get('block')!r} (supported: BasicBlockD)")
        stem = kw.get("stem_channels")
        if stem is not None and stem != kw.get("features_per_stage", [None])[0]:
            problems.append(f"stem_channels {stem!r} (supported: features_per_stage[0])")
    else:
        blocks_key = "n_conv_per_stage"
    if kw.get("nonlin_first", False):
        problems.append("nonlin_first true (supported: false)")
    required = ("n_stages", "features_per_stage", "kernel_sizes", "strides", blocks_key, "n_conv_per_stage_decoder")
    missing = [k for k in required if k not in kw]
    if missing:
        problems.append(f"missing arch_kwargs {', '.join(missing)}")
    if problems:
        raise PlansError(f"{where}: {cls} with settings autoseg's networks do not reproduce: " + "; ".join(problems))
    params = {
        "n_stages": int(kw["n_stages"]),
        "features_per_stage": [int(f) for f in kw["features_per_stage"]],
        "kernel_sizes": [[int(k) for k in ks] for ks in kw["kernel_sizes"]],
        "strides": [[int(s) for s in ss] if isinstance(ss, (list, tuple)) else [int(ss)] * dims
                    for ss in kw["strides"]],
        "n_conv_per_stage": _per_stage(kw[blocks_key], int(kw["n_stages"])),
        "n_conv_per_stage_decoder": _per_stage(kw["n_conv_per_stage_decoder"], int(kw["n_stages"]) - 1),
        "conv_bias": bool(kw.get("conv_bias", False)),
        "norm": norm,
        "nonlin": nonlin,
    }  # fmt: skip
    return ARCHITECTURES[cls], params


def _per_stage(value: Any, n: int) -> list[int]:
    return [int(value)] * n if isinstance(value, int) else [int(v) for v in value]


# ---- state-dict key names --------------------------------------------------------------------------------------
_RENAMES = (
    (re.compile(r"^encoder\.stages\.(\d+)\.0\.convs\.(\d+)\."), r"encoder.stages.\1.\2."),  # plain encoder
    (re.compile(r"^encoder\.stem\.convs\.0\."), "encoder.stem."),  # residual encoder: stem
    (re.compile(r"^encoder\.stages\.(\d+)\.blocks\.(\d+)\."), r"encoder.stages.\1.\2."),  # residual blocks
    (re.compile(r"\.skip\.(\d+)\."), r".shortcut.\1."),
    (re.compile(r"^decoder\.stages\.(\d+)\.convs\.(\d+)\."), r"decoder.stages.\1.\2."),
    (re.compile(r"^decoder\.transpconvs\."), "decoder.upsample."),
    (re.compile(r"^decoder\.seg_layers\."), "decoder.seg_heads."),
)
_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DistributedDataParallel wrappers


def map_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """dynamic_network_architectures' parameter names -> autoseg's (values unchanged). Keys that match no rule keep
    their name, so `load_state_dict` names them as unexpected."""
    out = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            key = key[len(prefix) :] if key.startswith(prefix) else key
        if ".all_modules." in key or key.startswith("decoder.encoder."):
            continue  # the same tensors under a second name
        for pattern, repl in _RENAMES:
            key = pattern.sub(repl, key)
        out[key] = value
    return out
