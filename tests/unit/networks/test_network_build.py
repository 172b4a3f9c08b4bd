"""Network registry: built-in names, user registration, error messages for bad names and parameters."""

from __future__ import annotations

import pytest
import torch
from netspec_helpers import make_params
from torch import nn

from autoseg.errors import ConfigError, PlansError
from autoseg.networks.build import build_network, networks
from autoseg.networks.resenc import ResEncUNet
from autoseg.networks.unet import PlainUNet
from autoseg.planning.plans import NetworkSpec


def test_builtin_names_build_the_right_classes():
    assert {"unet", "resenc_unet"} <= set(networks.names())
    assert isinstance(build_network(NetworkSpec("unet", make_params()), 1, 2), PlainUNet)
    net = build_network(NetworkSpec("resenc_unet", make_params()), 1, 2, deep_supervision=False)
    assert isinstance(net, ResEncUNet) and net.deep_supervision is False


def test_unknown_name_lists_known_networks():
    with pytest.raises(ConfigError) as err:
        build_network(NetworkSpec("unte", make_params()), 1, 2)
    msg = str(err.value)
    assert "unknown network 'unte'" in msg and "resenc_unet, unet" in msg and "Did you mean 'unet'" in msg


class TinyNet(nn.Module):
    def __init__(self, in_ch: int, num_classes: int, deep_supervision: bool):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.conv = nn.Conv2d(in_ch, num_classes, 1)

    def forward(self, x):
        y = self.conv(x)
        return [y] if self.deep_supervision else y


@pytest.fixture
def register_network():
    """networks.register for one test; the names are removed afterwards so no other test sees them."""
    added = []

    def register(name, builder=None):
        added.append(name)
        return networks.register(name, builder)

    yield register
    for name in added:
        networks.unregister(name)
    assert not set(added) & set(networks.names())


def test_user_registered_network_is_built_with_spec_and_flags(register_network):
    seen = {}

    @register_network("test_tiny_net")
    def build_tiny(spec, in_channels, num_classes, deep_supervision):
        seen.update(params=spec.params, args=(in_channels, num_classes, deep_supervision))
        return TinyNet(in_channels, num_classes, deep_supervision)

    net = build_network(NetworkSpec("test_tiny_net", {"width": 4}), 3, 5, deep_supervision=False)
    assert seen == {"params": {"width": 4}, "args": (3, 5, False)}
    assert net(torch.zeros(1, 3, 4, 4)).shape == (1, 5, 4, 4)


def test_builder_must_return_module_with_deep_supervision_flag(register_network):
    register_network("test_not_a_net", lambda spec, i, c, ds: nn.Identity())
    with pytest.raises(ConfigError, match="'test_not_a_net' must return a torch.nn.Module with a `deep_supervision`"):
        build_network(NetworkSpec("test_not_a_net", {}), 1, 2)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"kernel_sizes": [[3, 3, 3]] * 2}, "field kernel_sizes must have n_stages=3 entries"),
        ({"strides": [[1, 1, 1], [2, 2], [2, 2, 2]]}, r"field strides\[1\] must be a list of 3 integers"),
        ({"features_per_stage": [8, 16]}, "field features_per_stage must be a list of 3 integers"),
        ({"n_conv_per_stage_decoder": [2, 2, 2]}, "field n_conv_per_stage_decoder must be a list of 2 integers"),
        ({"kernel_sizes": [[2, 2, 2]] * 3}, "field kernel_sizes must hold odd sizes"),
        ({"norm": "group"}, "field norm 'group' unknown; known: batch, instance"),
        ({"n_stages": 1}, "field n_stages must be an integer >= 2"),
    ],
)
def test_bad_params_name_the_field(change, message):
    params = {**make_params(), **change}
    with pytest.raises(PlansError, match=message) as err:
        build_network(NetworkSpec("unet", params), 1, 2)
    assert "network 'unet' params" in str(err.value)


def test_missing_field_is_named():
    params = make_params()
    del params["strides"]
    with pytest.raises(PlansError, match="missing field\\(s\\) strides"):
        build_network(NetworkSpec("resenc_unet", params), 1, 2)


def test_n_blocks_per_stage_alias_for_residual_encoder():
    params = make_params(n_conv=[1, 2, 3])
    params["n_blocks_per_stage"] = params.pop("n_conv_per_stage")
    net = build_network(NetworkSpec("resenc_unet", params), 1, 2)
    assert [len(s) for s in net.encoder.stages] == [1, 2, 3]
