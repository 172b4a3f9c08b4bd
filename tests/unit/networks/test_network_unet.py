"""Plain U-Net: output shapes (2D, 3D, anisotropic), deep supervision on/off, parameter count, init, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from netspec_helpers import make_params
from torch import nn

from autoseg.networks.blocks import parse_unet_params
from autoseg.networks.unet import PlainUNet
from autoseg.planning.plans import NetworkSpec


def build(params: dict, in_ch: int = 1, num_classes: int = 3, ds: bool = True) -> PlainUNet:
    torch.manual_seed(0)
    return PlainUNet(parse_unet_params(params, "unet"), in_ch, num_classes, ds)


def ds_shapes(patch, strides):
    """Expected spatial shape of each deep-supervision output, highest resolution first."""
    shapes, size = [], list(patch)
    for s in strides[:-1]:
        size = [a // b for a, b in zip(size, s)]
        shapes.append(tuple(size))
    return shapes


@pytest.mark.parametrize(
    "dims,features,patch",
    [(3, (8, 16, 32, 64), (16, 24, 16)), (2, (8, 16, 32, 64, 64), (32, 48))],
)
def test_deep_supervision_outputs_shapes(dims, features, patch):
    params = make_params(features=features, dims=dims)
    net = build(params, in_ch=2, num_classes=4)
    out = net(torch.randn(2, 2, *patch))
    assert isinstance(out, list) and len(out) == len(features) - 1
    assert [tuple(o.shape[2:]) for o in out] == ds_shapes(patch, params["strides"])
    assert all(o.shape[:2] == (2, 4) for o in out)
    assert [tuple(o.shape[2:]) for o in out][1] == tuple(p // 2 for p in patch)


def test_anisotropic_strides_and_kernels():
    params = make_params(
        features=(8, 16, 32), kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]]
    )
    net = build(params, num_classes=2)
    first = net.encoder.stages[0][0].conv
    assert first.kernel_size == (1, 3, 3) and first.padding == (0, 1, 1) and first.stride == (1, 1, 1)
    assert net.encoder.stages[1][0].conv.stride == (1, 2, 2)
    assert net.encoder.stages[1][1].conv.stride == (1, 1, 1)
    assert net.decoder.upsample[0].stride == (2, 2, 2) and net.decoder.upsample[1].kernel_size == (1, 2, 2)
    assert net.decoder.stages[-1][0].conv.kernel_size == (1, 3, 3)
    out = net(torch.randn(1, 1, 4, 16, 20))
    assert [tuple(o.shape) for o in out] == [(1, 2, 4, 16, 20), (1, 2, 4, 8, 10)]


def test_deep_supervision_off_returns_one_tensor_and_skips_lower_heads():
    net = build(make_params(features=(8, 16, 32, 64)), num_classes=3)
    calls = []
    for i, head in enumerate(net.decoder.seg_heads):
        head.register_forward_hook(lambda m, inp, out, i=i: calls.append(i))
    x = torch.randn(1, 1, 16, 16, 16)
    full = net(x)
    assert sorted(calls) == [0, 1, 2]
    calls.clear()
    net.deep_supervision = False
    single = net(x)
    assert torch.is_tensor(single) and single.shape == (1, 3, 16, 16, 16)
    assert calls == [2]  # only the highest-resolution head (last decoder stage) ran
    torch.testing.assert_close(single, full[0])


def expected_param_count(params: dict, in_ch: int, num_classes: int) -> int:
    feats, kernels, strides = params["features_per_stage"], params["kernel_sizes"], params["strides"]
    bias = int(params["conv_bias"])
    total, ch = 0, in_ch
    for i, f in enumerate(feats):
        for _ in range(params["n_conv_per_stage"][i]):
            total += ch * f * math.prod(kernels[i]) + bias * f + 2 * f  # conv (+bias) + norm affine
            ch = f
    n = len(feats)
    for j in range(n - 1):
        below, skip = feats[n - 1 - j], feats[n - 2 - j]
        total += below * skip * math.prod(strides[n - 1 - j]) + bias * skip
        ch = 2 * skip
        for _ in range(params["n_conv_per_stage_decoder"][j]):
            total += ch * skip * math.prod(kernels[n - 2 - j]) + bias * skip + 2 * skip
            ch = skip
        total += skip * num_classes + num_classes
    return total


@pytest.mark.parametrize("conv_bias", [True, False])
def test_parameter_count_matches_formula(conv_bias):
    params = make_params(features=(8, 16, 32), kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], conv_bias=conv_bias)
    net = build(params, in_ch=2, num_classes=3)
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == expected_param_count(params, 2, 3)
    # 3d_fullres Hippocampus-size network (4 stages, 32..256 features): 5.6 million parameters
    big = make_params(features=(32, 64, 128, 256))
    assert sum(p.numel() for p in build(big, 1, 3).parameters()) == expected_param_count(big, 1, 3) == 5_603_177


def test_he_init_and_zero_bias():
    net = build(make_params(features=(32, 64, 128)))
    conv = net.encoder.stages[2][1].conv  # 128 -> 128, 3x3x3: fan_in = 3456
    expected_std = math.sqrt(2 / (1 + 1e-2**2) / (128 * 27))
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.03)
    assert torch.count_nonzero(conv.bias) == 0
    assert torch.count_nonzero(net.decoder.upsample[0].bias) == 0
    norm = net.encoder.stages[0][0].norm
    assert isinstance(norm, nn.InstanceNorm3d) and norm.affine and norm.eps == 1e-5
    act = net.encoder.stages[0][0].act
    assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.01 and act.inplace


def test_gradients_reach_every_parameter():
    net = build(make_params(features=(8, 16, 32), dims=2), num_classes=3)
    out = net(torch.randn(2, 1, 16, 16))
    sum(o.square().mean() for o in out).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_built_from_spec_2d_dims():
    from autoseg.networks.build import build_network

    net = build_network(NetworkSpec("unet", make_params(dims=2)), 1, 2, deep_supervision=False)
    assert isinstance(net.encoder.stages[0][0].conv, nn.Conv2d)
    assert net(torch.randn(1, 1, 8, 12)).shape == (1, 2, 8, 12)
