"""The plain U-Net ("unet"): nnU-Net's PlainConvUNet topology, and the decoder shared with the residual encoder.

Encoder stage i: n_conv_per_stage[i] x [conv(kernel_sizes[i]) -> InstanceNorm -> LeakyReLU], the first conv strided by
strides[i] (stage 0 has stride 1). Decoder stage j (j = 0 just above the bottleneck): transposed conv with kernel =
stride = the stride of the encoder stage below, concatenation with the skip, n_conv_per_stage_decoder[j] convs, and a
1x1 segmentation head. With `deep_supervision` on, forward returns n_stages-1 logits, highest resolution first;
otherwise only the highest-resolution logits (the other heads are not evaluated).
"""

from __future__ import annotations

import torch
from torch import nn

from autoseg.networks.blocks import CONV, TRANSPOSED_CONV, StackedConvs, UNetParams, he_init


class PlainEncoder(nn.Module):
    """Stages of stacked convs; forward returns every stage's output (the skips, the last is the bottleneck)."""

    def __init__(self, p: UNetParams, in_channels: int):
        super().__init__()
        stages, ch = [], in_channels
        for i in range(p.n_stages):
            f = p.features_per_stage[i]
            stages.append(StackedConvs(p, p.n_conv_per_stage[i], ch, f, p.kernel_sizes[i], p.strides[i]))
            ch = f
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    """Transposed-conv upsampling, skip concatenation, stacked convs and a 1x1 seg head per decoder stage."""

    def __init__(self, p: UNetParams, num_classes: int):
        super().__init__()
        feats, n = p.features_per_stage, p.n_stages
        up, stages, heads = [], [], []
        for j in range(n - 1):
            below, skip = feats[n - 1 - j], feats[n - 2 - j]
            stride = p.strides[n - 1 - j]
            up.append(TRANSPOSED_CONV[p.dims](below, skip, stride, stride, bias=p.conv_bias))
            kernel = p.kernel_sizes[n - 2 - j]
            stages.append(StackedConvs(p, p.n_conv_per_stage_decoder[j], 2 * skip, skip, kernel, (1,) * p.dims))
            heads.append(CONV[p.dims](skip, num_classes, 1, 1, 0, bias=True))
        self.upsample = nn.ModuleList(up)
        self.stages = nn.ModuleList(stages)
        self.seg_heads = nn.ModuleList(heads)

    def forward(self, skips: list[torch.Tensor], deep_supervision: bool) -> list[torch.Tensor] | torch.Tensor:
        x = skips[-1]
        outputs = []
        last = len(self.stages) - 1
        for j, (up, stage) in enumerate(zip(self.upsample, self.stages)):
            x = stage(torch.cat((up(x), skips[-(j + 2)]), dim=1))
            if deep_supervision or j == last:
                outputs.append(self.seg_heads[j](x))
        if not deep_supervision:
            return outputs[0]
        return outputs[::-1]


class PlainUNet(nn.Module):
    """Plain convolutional U-Net with deep supervision; switch `deep_supervision` off for inference."""

    def __init__(self, params: UNetParams, in_channels: int, num_classes: int, deep_supervision: bool = True):
        super().__init__()
        self.params = params
        self.deep_supervision = deep_supervision
        self.encoder = PlainEncoder(params, in_channels)
        self.decoder = UNetDecoder(params, num_classes)
        self.apply(he_init)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        return self.decoder(self.encoder(x), self.deep_supervision)
