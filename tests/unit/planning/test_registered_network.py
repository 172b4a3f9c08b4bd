"""A user-registered network with its own memory estimate: the planner sizes it by that estimate; the plans build it.

Everything registered here is removed again in the fixture's teardown (no other test sees it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
import torch
from test_planner import make_fp
from torch import nn

from autoseg.errors import ConfigError
from autoseg.networks.build import build_network, networks
from autoseg.networks.memory import (
    MemoryReference,
    estimate_feature_map_voxels,
    memory_estimates,
    network_memory,
    register_memory_estimate,
)
from autoseg.planning.planner import PRESETS, memory_reference, plan_dataset
from autoseg.planning.plans import Configuration, NetworkSpec

HUNGRY = "test_hungry_net"  # says it needs twice the plain U-Net's memory
FRUGAL = "test_frugal_net"  # counts like the U-Net but states reference values twice the U-Net's
NO_ESTIMATE = "test_unsized_net"  # a builder but no memory estimate


class TinySegNet(nn.Module):
    """A 1x1-conv segmenter that honours the deep-supervision contract (a list while deep_supervision is True)."""

    def __init__(self, in_channels: int, num_classes: int, deep_supervision: bool, n_stages: int, ndim: int):
        super().__init__()
        self.deep_supervision, self.n_stages = deep_supervision, n_stages
        self.head = (nn.Conv3d if ndim == 3 else nn.Conv2d)(in_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        y = self.head(x)
        return [y] if self.deep_supervision else y


def build_tiny(spec: NetworkSpec, in_channels: int, num_classes: int, deep_supervision: bool) -> nn.Module:
    ndim = len(spec.params["kernel_sizes"][0])
    return TinySegNet(in_channels, num_classes, deep_supervision, int(spec.params["n_stages"]), ndim)


def hungry_voxels(
    params: Mapping[str, Any], patch_size: Sequence[int], in_channels: int, num_classes: int, deep_supervision: bool
) -> int:
    return 2 * estimate_feature_map_voxels("unet", params, patch_size, in_channels, num_classes, deep_supervision)


@pytest.fixture
def user_networks() -> Iterator[None]:
    networks.register(HUNGRY, build_tiny)
    networks.register(FRUGAL, build_tiny)
    networks.register(NO_ESTIMATE, build_tiny)
    register_memory_estimate(HUNGRY, hungry_voxels)  # reuses the U-Net's reference values (the default)
    unet = network_memory("unet")
    doubled = MemoryReference(2 * unet.reference.voxels_3d, 2 * unet.reference.voxels_2d, unet.reference.gpu_gb)
    register_memory_estimate(FRUGAL, unet.estimate, reference=doubled)
    yield
    for name in (HUNGRY, FRUGAL, NO_ESTIMATE):
        networks.unregister(name)
    for name in (HUNGRY, FRUGAL):
        memory_estimates.unregister(name)
    assert not {HUNGRY, FRUGAL, NO_ESTIMATE} & (set(networks.names()) | set(memory_estimates.names()))


def volume(cfg: Configuration) -> int:
    return math.prod(cfg.patch_size)


def test_builtins_register_their_estimate_and_reference_values():
    assert {"unet", "resenc_unet"} <= set(memory_estimates.names())
    assert network_memory("unet").reference == MemoryReference(560e6, 85e6, 8.0, 2, 12)
    assert network_memory("resenc_unet").reference == MemoryReference(680e6, 135e6, 8.0, 2, 12)
    assert memory_reference(PRESETS["resenc-l"], "resenc_unet") == MemoryReference(2.1e9, 380e6, 24.0)
    # a preset's own reference values were calibrated for its network only
    assert memory_reference(PRESETS["resenc-l"], "unet") == network_memory("unet").reference


def test_twice_the_memory_halves_the_batch(user_networks):
    fp = make_fp((1.0, 1.0, 1.0), (36, 50, 35), n=20000)  # small images (patch = median shape), no 5 % cap
    unet, _ = plan_dataset(fp)
    hungry, why = plan_dataset(fp, network=HUNGRY)
    for name in ("3d_fullres", "2d"):
        a, b = unet.configuration(name), hungry.configuration(name)
        assert b.network.name == HUNGRY and b.network.params == a.network.params
        assert b.patch_size == a.patch_size
        assert b.batch_size == pytest.approx(a.batch_size / 2, abs=1) and b.batch_size < a.batch_size
    assert any(f"network {HUNGRY}" in w for w in why)


def test_twice_the_memory_shrinks_the_patch(user_networks):
    fp = make_fp((1.0, 1.0, 1.0), (200, 400, 400), n=100)  # large images: the patch is what the budget limits
    unet = plan_dataset(fp)[0].configuration("3d_fullres")
    hungry = plan_dataset(fp, network=HUNGRY)[0].configuration("3d_fullres")
    assert volume(hungry) < volume(unet)


def test_own_reference_values_are_used(user_networks):
    fp = make_fp((1.0, 1.0, 1.0), (36, 50, 35), n=20000)
    unet = plan_dataset(fp)[0].configuration("3d_fullres")
    frugal = plan_dataset(fp, network=FRUGAL)[0].configuration("3d_fullres")
    assert frugal.batch_size == pytest.approx(2 * unet.batch_size, abs=1)


def test_builtin_plans_are_unchanged_by_registrations(user_networks):
    fp = make_fp((1.0, 0.77, 0.77), (480, 512, 512), n=100, channels=("CT",))
    assert plan_dataset(fp, network="unet")[0] == plan_dataset(fp)[0]
    assert plan_dataset(fp, preset="resenc-m", network="resenc_unet")[0] == plan_dataset(fp, preset="resenc-m")[0]


def test_the_plans_build_the_user_network(user_networks):
    plans, _ = plan_dataset(make_fp((1.0, 1.0, 1.0), (36, 50, 35), n=200, labels=3), network=HUNGRY)
    cfg = plans.configuration("3d_fullres")
    net = build_network(cfg.network, in_channels=1, num_classes=3, deep_supervision=False)
    assert isinstance(net, TinySegNet) and net.n_stages == cfg.network.params["n_stages"]
    out = net(torch.zeros(1, 1, 8, 8, 8))
    assert out.shape == (1, 3, 8, 8, 8)


def test_network_without_estimate_is_a_clear_error(user_networks):
    with pytest.raises(ConfigError) as err:
        plan_dataset(make_fp((1.0, 1.0, 1.0), (36, 50, 35)), network=NO_ESTIMATE)
    msg = str(err.value)
    assert f"no feature-map estimate for network {NO_ESTIMATE!r}" in msg
    assert f"resenc_unet, {FRUGAL}, {HUNGRY}, unet" in msg and "register_memory_estimate" in msg


def test_reference_by_unknown_name_and_duplicate_registration(user_networks):
    with pytest.raises(ConfigError, match="unknown network memory estimate 'vnet'"):
        register_memory_estimate("test_other_net", hungry_voxels, reference="vnet")
    assert "test_other_net" not in memory_estimates
    with pytest.raises(ValueError, match=f"network memory estimate {HUNGRY!r} is already registered"):
        register_memory_estimate(HUNGRY, hungry_voxels)
    with pytest.raises(ConfigError, match="must be positive"):
        MemoryReference(0.0, 85e6)
