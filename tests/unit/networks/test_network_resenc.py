"""Residual-encoder U-Net: blocks, shortcuts, shapes, deep supervision, parameter count, init, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from netspec_helpers import make_params
from torch import nn

from autoseg.networks.blocks import parse_unet_params
from autoseg.networks.resenc import BasicBlockD, ResEncUNet


def build(params: dict, in_ch: int = 1, num_classes: int = 3, ds: bool = True) -> ResEncUNet:
    torch.manual_seed(0)
    return ResEncUNet(parse_unet_params(params, "resenc_unet"), in_ch, num_classes, ds)


def test_blocks_per_stage_and_shortcuts():
    params = make_params(features=(8, 16, 16), n_conv=[1, 3, 2], n_conv_decoder=1)
    net = build(params)
    assert [len(s) for s in net.encoder.stages] == [1, 3, 2]
    assert all(isinstance(b, BasicBlockD) for s in net.encoder.stages for b in s)
    assert net.encoder.stem.conv.stride == (1, 1, 1) and net.encoder.stem.conv.out_channels == 8
    assert isinstance(net.encoder.stages[0][0].shortcut, nn.Identity)  # no stride, 8 -> 8
    strided_proj = net.encoder.stages[1][0].shortcut  # stride 2, 8 -> 16: avgpool + 1x1 conv + norm
    assert [type(m) for m in strided_proj] == [nn.AvgPool3d, type(net.encoder.stem)]
    assert strided_proj[1].conv.kernel_size == (1, 1, 1) and strided_proj[1].conv.bias is None
    assert isinstance(strided_proj[1].act, nn.Identity)
    pool_only = net.encoder.stages[2][0].shortcut  # stride 2, 16 -> 16: avgpool only
    assert [type(m) for m in pool_only] == [nn.AvgPool3d]
    assert net.encoder.stages[1][0].conv1.conv.stride == (2, 2, 2)
    assert net.encoder.stages[1][1].conv1.conv.stride == (1, 1, 1)
    assert isinstance(net.encoder.stages[1][0].conv2.act, nn.Identity)
    assert [len(s) for s in net.decoder.stages] == [1, 1]


@pytest.mark.parametrize("dims,patch", [(3, (8, 16, 16)), (2, (16, 24))])
def test_shapes_deep_supervision_on_and_off(dims, patch):
    strides = [[1] * dims, [1] + [2] * (dims - 1), [2] * dims]
    net = build(make_params(features=(8, 16, 32), dims=dims, strides=strides, n_conv=[1, 2, 2]), 2, 4)
    x = torch.randn(2, 2, *patch)
    out = net(x)
    half_inplane = (patch[0],) + tuple(p // 2 for p in patch[1:])
    assert [tuple(o.shape) for o in out] == [(2, 4, *patch), (2, 4, *half_inplane)]
    net.deep_supervision = False
    single = net(x)
    assert torch.is_tensor(single)
    torch.testing.assert_close(single, out[0])


def test_parameter_count_matches_formula():
    params = make_params(features=(8, 16, 16), n_conv=[1, 2, 2], n_conv_decoder=1)
    net = build(params, in_ch=2, num_classes=3)
    feats, k = params["features_per_stage"], 27
    total = 2 * 8 * k + 8 + 16  # stem
    ch = 8
    for i, f in enumerate(feats):
        for _ in range(params["n_conv_per_stage"][i]):
            total += (ch * f * k + f + 2 * f) + (f * f * k + f + 2 * f)  # conv1, conv2 (+bias, norm)
            if ch != f:
                total += ch * f + 2 * f  # 1x1 projection without bias + norm
            ch = f
    for below, skip in ((16, 16), (16, 8)):  # decoder: transposed conv, 1 conv, seg head
        total += below * skip * 8 + skip + (2 * skip * skip * k + skip + 2 * skip) + (skip * 3 + 3)
    assert sum(p.numel() for p in net.parameters()) == total


def test_init_zeroes_last_norm_so_blocks_start_as_shortcut():
    net = build(make_params(features=(8, 16, 32), n_conv=[1, 2, 2]))
    for block in net.modules():
        if isinstance(block, BasicBlockD):
            assert torch.count_nonzero(block.conv2.norm.weight) == 0
            assert torch.count_nonzero(block.conv2.norm.bias) == 0
    block = net.encoder.stages[0][0]  # identity shortcut: output = leaky_relu(input)
    x = torch.randn(1, 8, 4, 4, 4)
    torch.testing.assert_close(block(x.clone()), nn.functional.leaky_relu(x, 0.01))
    conv = net.encoder.stages[2][1].conv1.conv
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (1 + 1e-4) / (32 * 27)), rel=0.05)


def test_gradients_flow_and_a_step_reaches_the_residual_paths():
    net = build(make_params(features=(8, 16, 32), dims=2, n_conv=[1, 2, 2], n_conv_decoder=1))
    x = torch.randn(2, 1, 16, 16)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):  # at init the residual branches' convs get no gradient (their norm scale is 0)
        opt.zero_grad()
        sum(o.square().mean() for o in net(x)).backward()
        opt.step()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
