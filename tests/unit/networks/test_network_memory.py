"""The planner's feature-map size proxy (autoseg.networks.memory) against a forward-hook count of the real networks.

Counting semantics (nnU-Net's compute_conv_feature_map_size): per sample, the output elements (channels x voxels) of
every conv in encoder and decoder, of every transposed conv, of the seg head at every deep-supervision resolution, and
for residual blocks the shortcut output of every block whose shortcut is not the identity (1x1 projection and/or
average pooling), each counted once. Norms, nonlinearities and concatenations are not counted.
"""

from __future__ import annotations

import pytest
import torch
from netspec_helpers import make_params
from torch import nn

from autoseg.networks.build import build_network
from autoseg.networks.resenc import BasicBlockD
from autoseg.planning.plans import NetworkSpec

CONVS = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def hooked_feature_map_size(net: nn.Module, in_channels: int, patch) -> int:
    counted: list[int] = []
    hooks = []
    shortcut_modules = set()
    for module in net.modules():
        if isinstance(module, BasicBlockD) and not isinstance(module.shortcut, nn.Identity):
            hooks.append(module.shortcut.register_forward_hook(lambda m, i, o: counted.append(o[0].numel())))
            shortcut_modules.update(id(m) for m in module.shortcut.modules())
    for module in net.modules():
        if isinstance(module, CONVS) and id(module) not in shortcut_modules:
            hooks.append(module.register_forward_hook(lambda m, i, o: counted.append(o[0].numel())))
    net.deep_supervision = True
    with torch.no_grad():
        net(torch.zeros(1, in_channels, *patch))
    for h in hooks:
        h.remove()
    return sum(counted)


def test_hook_counter_on_a_hand_counted_network():
    params = make_params(features=(2, 4), dims=2, n_conv=1, n_conv_decoder=1)
    net = build_network(NetworkSpec("unet", params), 1, 3)
    # encoder 2*4*4 + 4*2*2 = 48; decoder: transposed conv 2*16, conv 2*16, seg head 3*16 -> 112
    assert hooked_feature_map_size(net, 1, (4, 4)) == 160


CASES = [
    ("unet", make_params(features=(8, 16, 32, 32), dims=3), (16, 16, 24)),
    (
        "unet",
        make_params(
            features=(4, 8, 16), kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]]
        ),
        (4, 16, 20),
    ),
    ("unet", make_params(features=(8, 16, 32, 64, 64), dims=2, n_conv_decoder=1), (32, 48)),
    ("resenc_unet", make_params(features=(8, 16, 16), n_conv=[1, 3, 4], n_conv_decoder=1), (8, 16, 16)),
    ("resenc_unet", make_params(features=(8, 16, 32, 32), dims=2, n_conv=[1, 3, 4, 6], n_conv_decoder=1), (32, 32)),
]


@pytest.mark.parametrize("name,params,patch", CASES)
def test_estimate_matches_forward_hook_count(name, params, patch):
    from autoseg.networks.memory import estimate_feature_map_voxels

    net = build_network(NetworkSpec(name, params), 2, 3)
    expected = hooked_feature_map_size(net, 2, patch)
    assert int(estimate_feature_map_voxels(name, params, patch, 2, 3)) == expected
