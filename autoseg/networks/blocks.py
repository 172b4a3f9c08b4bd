"""Building blocks of the built-in U-Nets: validated parameters, ops by name, conv-norm-nonlin stacks, He init.

Every op is chosen by name and dimensionality (2 or 3), so the same code builds 2D and 3D networks:
conv -> InstanceNorm (eps 1e-5, affine) -> LeakyReLU(0.01, inplace). Padding is "same" ((k-1)//2 per axis), so a
conv with stride s maps a size n to ceil(n/s), which equals n//s for the divisible patch sizes the planner chooses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoseg.errors import PlansError

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
TRANSPOSED_CONV = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
AVG_POOL = {2: nn.AvgPool2d, 3: nn.AvgPool3d}
NORMS = {"instance": {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}, "batch": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}}
NONLINS = {"leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True), "relu": lambda: nn.ReLU(inplace=True)}
HE_NEG_SLOPE = 1e-2


@dataclass(frozen=True)
class UNetParams:
    """The network-spec parameters shared by the built-in U-Nets (see NetworkSpec.params), validated."""

    n_stages: int
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    n_conv_per_stage: tuple[int, ...]  # plain U-Net: convs per encoder stage; residual encoder: blocks per stage
    n_conv_per_stage_decoder: tuple[int, ...]  # index 0 = decoder stage just above the bottleneck
    conv_bias: bool = True
    norm: str = "instance"
    nonlin: str = "leaky_relu"

    @property
    def dims(self) -> int:
        return len(self.kernel_sizes[0])


def _int_list(where: str, key: str, value: Any, length: int) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value] * length
    if not isinstance(value, Sequence) or len(value) != length:
        raise PlansError(f"{where}: field {key} must be a list of {length} integers, got {value!r}")
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in value):
        raise PlansError(f"{where}: field {key} must hold positive integers, got {value!r}")
    return tuple(value)


def parse_unet_params(params: dict[str, Any], network_name: str) -> UNetParams:
    """Check a NetworkSpec.params dict; a missing or inconsistent field raises PlansError naming it."""
    where = f"network {network_name!r} params"
    params = dict(params)
    if "n_conv_per_stage" not in params and "n_blocks_per_stage" in params:
        params["n_conv_per_stage"] = params["n_blocks_per_stage"]
    required = ("n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage")
    missing = [k for k in required if k not in params]
    if missing:
        raise PlansError(f"{where}: missing field(s) {', '.join(missing)}")
    n = params["n_stages"]
    if not isinstance(n, int) or n < 2:
        raise PlansError(f"{where}: field n_stages must be an integer >= 2, got {n!r}")
    kernels_raw, strides_raw = params["kernel_sizes"], params["strides"]
    for key, val in (("kernel_sizes", kernels_raw), ("strides", strides_raw)):
        if not isinstance(val, Sequence) or len(val) != n:
            raise PlansError(f"{where}: field {key} must have n_stages={n} entries, got {val!r}")
    dims = len(kernels_raw[0]) if isinstance(kernels_raw[0], Sequence) else 0
    if dims not in (2, 3):
        raise PlansError(f"{where}: field kernel_sizes[0] must have 2 or 3 values, got {kernels_raw[0]!r}")
    kernels = tuple(_int_list(where, f"kernel_sizes[{i}]", k, dims) for i, k in enumerate(kernels_raw))
    strides = tuple(_int_list(where, f"strides[{i}]", s, dims) for i, s in enumerate(strides_raw))
    if any(k % 2 == 0 for ks in kernels for k in ks):
        raise PlansError(f"{where}: field kernel_sizes must hold odd sizes, got {kernels_raw!r}")
    norm, nonlin = params.get("norm", "instance"), params.get("nonlin", "leaky_relu")
    if norm not in NORMS:
        raise PlansError(f"{where}: field norm {norm!r} unknown; known: {', '.join(sorted(NORMS))}")
    if nonlin not in NONLINS:
        raise PlansError(f"{where}: field nonlin {nonlin!r} unknown; known: {', '.join(sorted(NONLINS))}")
    return UNetParams(
        n_stages=n,
        features_per_stage=_int_list(where, "features_per_stage", params["features_per_stage"], n),
        kernel_sizes=kernels,
        strides=strides,
        n_conv_per_stage=_int_list(where, "n_conv_per_stage", params["n_conv_per_stage"], n),
        n_conv_per_stage_decoder=_int_list(
            where, "n_conv_per_stage_decoder", params.get("n_conv_per_stage_decoder", 2), n - 1
        ),
        conv_bias=bool(params.get("conv_bias", True)),
        norm=norm,
        nonlin=nonlin,
    )


class ConvNormAct(nn.Module):
    """conv (same padding, optional stride) -> norm -> nonlin (nonlin left out when `act` is False)."""

    def __init__(
        self, p: UNetParams, in_ch: int, out_ch: int, kernel: Sequence[int], stride: Sequence[int], act: bool = True
    ):
        super().__init__()
        padding = [(k - 1) // 2 for k in kernel]
        self.conv = CONV[p.dims](in_ch, out_ch, tuple(kernel), tuple(stride), padding, bias=p.conv_bias)
        self.norm = NORMS[p.norm][p.dims](out_ch, eps=1e-5, affine=True)
        self.act = NONLINS[p.nonlin]() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class StackedConvs(nn.Sequential):
    """n ConvNormAct; the first carries `first_stride` (strided-conv downsampling) and maps in_ch -> out_ch."""

    def __init__(
        self, p: UNetParams, n: int, in_ch: int, out_ch: int, kernel: Sequence[int], first_stride: Sequence[int]
    ):
        ones = (1,) * len(kernel)
        super().__init__(
            *[
                ConvNormAct(p, in_ch if i == 0 else out_ch, out_ch, kernel, first_stride if i == 0 else ones)
                for i in range(n)
            ]
        )


def he_init(module: nn.Module) -> None:
    """Kaiming-normal (negative slope 1e-2) weights and zero bias for every conv and transposed conv."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=HE_NEG_SLOPE)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
