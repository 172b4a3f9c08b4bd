"""The residual-encoder U-Net ("resenc_unet"): nnU-Net's ResidualEncoderUNet topology.

Encoder: a stem conv (kernel_sizes[0], no stride) -> stages of n_conv_per_stage[i] (= blocks per stage) BasicBlockD;
the first block of a stage carries the stage stride. BasicBlockD = conv-norm-nonlin (strided) -> conv-norm, plus a
ResNet-D shortcut (average pooling when strided, then 1x1 conv + norm when the channel count changes), then nonlin.
The decoder is the plain U-Net's (unet.UNetDecoder). Init: He for convs, and the last norm of each residual block
starts at zero so every block initially passes its shortcut through.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from autoseg.networks.blocks import AVG_POOL, NONLINS, ConvNormAct, UNetParams, he_init
from autoseg.networks.unet import UNetDecoder


class BasicBlockD(nn.Module):
    def __init__(self, p: UNetParams, in_ch: int, out_ch: int, kernel, stride):
        super().__init__()
        ones = (1,) * p.dims
        self.conv1 = ConvNormAct(p, in_ch, out_ch, kernel, stride)
        self.conv2 = ConvNormAct(p, out_ch, out_ch, kernel, ones, act=False)
        self.act = NONLINS[p.nonlin]()
        shortcut: list[nn.Module] = []
        if any(s != 1 for s in stride):
            shortcut.append(AVG_POOL[p.dims](tuple(stride), tuple(stride)))
        if in_ch != out_ch:
            proj_params = replace(p, conv_bias=False)
            shortcut.append(ConvNormAct(proj_params, in_ch, out_ch, ones, ones, act=False))
        self.shortcut = nn.Sequential(*shortcut) if shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return self.act(out + self.shortcut(x))


class ResidualEncoder(nn.Module):
    """Stem + residual stages; forward returns every stage's output (the skips, the last is the bottleneck)."""

    def __init__(self, p: UNetParams, in_channels: int):
        super().__init__()
        ones = (1,) * p.dims
        self.stem = ConvNormAct(p, in_channels, p.features_per_stage[0], p.kernel_sizes[0], ones)
        stages, ch = [], p.features_per_stage[0]
        for i in range(p.n_stages):
            f, k = p.features_per_stage[i], p.kernel_sizes[i]
            blocks = [
                BasicBlockD(p, ch if b == 0 else f, f, k, p.strides[i] if b == 0 else ones)
                for b in range(p.n_conv_per_stage[i])
            ]
            stages.append(nn.Sequential(*blocks))
            ch = f
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


def _zero_last_norm(module: nn.Module) -> None:
    if isinstance(module, BasicBlockD):
        nn.init.zeros_(module.conv2.norm.weight)
        nn.init.zeros_(module.conv2.norm.bias)


class ResEncUNet(nn.Module):
    """Residual-encoder U-Net with deep supervision; switch `deep_supervision` off for inference."""

    def __init__(self, params: UNetParams, in_channels: int, num_classes: int, deep_supervision: bool = True):
        super().__init__()
        self.params = params
        self.deep_supervision = deep_supervision
        self.encoder = ResidualEncoder(params, in_channels)
        self.decoder = UNetDecoder(params, num_classes)
        self.apply(he_init)
        self.apply(_zero_last_norm)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        return self.decoder(self.encoder(x), self.deep_supervision)
