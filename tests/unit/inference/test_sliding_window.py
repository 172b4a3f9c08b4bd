"""Sliding-window inference: tile positions, Gaussian weights, constant/identity networks, padding, mirror TTA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from autoseg.inference import sliding_window as sw
from autoseg.inference.sliding_window import (
    gaussian_importance,
    mirror_subsets,
    predict_2d_from_3d,
    sliding_window_logits,
    tile_positions,
)


class ConstantNet(nn.Module):
    """Returns the same logit per class everywhere (K = len(values)), optionally as a deep-supervision list."""

    def __init__(self, values=(1.0, -2.0, 0.5), ndim: int = 3, as_list: bool = False):
        super().__init__()
        self.values = nn.Parameter(torch.tensor(values))
        self.ndim, self.as_list = ndim, as_list

    def forward(self, x):
        assert x.ndim == self.ndim + 2, f"expected a {self.ndim}D batch, got {tuple(x.shape)}"
        out = self.values.view(1, -1, *([1] * self.ndim)).expand(x.shape[0], -1, *x.shape[2:])
        return [out * 1.0, out[..., ::2] * 0.0] if self.as_list else out * 1.0


class IdentityNet(nn.Module):
    """Output channel k = input channel k (checks that the weighted sum is normalised exactly)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.scale


class TileMarkerNet(nn.Module):
    """Each tile's output is constant: the value of the tile's first input voxel."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        corner = x[(slice(None), slice(0, 1), *([0] * (x.ndim - 2)))]
        return corner.view(x.shape[0], 1, *([1] * (x.ndim - 2))).expand(-1, 1, *x.shape[2:]) + self.dummy


def test_tile_positions_hand_computed():
    # 100-40 = 60, step 20 -> n = 60/20 + 1 = 4; an axis equal to the patch has one tile
    assert tile_positions((100, 50), (40, 50)) == [[0, 20, 40, 60], [0]]
    # 37-16 = 21, target step 8 -> n = ceil(21/8) + 1 = 4, spacing 7
    assert tile_positions((37,), (16,)) == [[0, 7, 14, 21]]
    # 45-20 = 25, target step 10 -> n = 4, spacing 8.33 -> 0, 8.33, 16.67, 25 rounded
    assert tile_positions((45,), (20,)) == [[0, 8, 17, 25]]
    # step 1: 100-40 = 60, target step 40 -> n = 3, spacing 30
    assert tile_positions((100,), (40,), step=1.0) == [[0, 30, 60]]
    # Hippocampus-like volume padded to the patch: one tile per axis
    assert tile_positions((40, 56, 40), (40, 56, 40)) == [[0], [0], [0]]


def test_tile_positions_rejects_image_smaller_than_patch():
    with pytest.raises(ValueError, match="smaller than the patch"):
        tile_positions((30, 60), (40, 56))


def test_gaussian_importance_centre_sigma_and_symmetry():
    g = gaussian_importance((16, 9, 12)).numpy()
    assert g.shape == (16, 9, 12) and g.dtype == np.float32
    assert g.max() == pytest.approx(1.0, abs=1e-6)
    for axis in range(3):
        np.testing.assert_allclose(g, np.flip(g, axis), rtol=1e-6)
    # along axis 0 (p=16, sigma=2, centre 7.5) at the centre row of the odd axis 1 (index 4)
    expected = np.exp(-0.5 * ((np.arange(16) - 7.5) / 2.0) ** 2)
    profile = g[:, 4, :].sum(1)
    np.testing.assert_allclose(profile / profile.max(), expected / expected.max(), rtol=1e-5)


def test_gaussian_importance_has_no_zero_in_half_precision():
    g = gaussian_importance((64, 64, 64), dtype=torch.float16)
    # corner value exp(-0.5*3*(31.5/8)^2) ~ 8e-11 underflows float16 and is replaced by the smallest non-zero value
    assert g.dtype == torch.float16
    assert float(g.min()) > 0
    assert float(g[0, 0, 0]) == float(g.min())
    assert float(g.max()) == 1.0


def test_mirror_subsets_counts():
    assert mirror_subsets(()) == [()]
    assert len(mirror_subsets((0, 1, 2))) == 8
    assert mirror_subsets((1, 0)) == [(), (0,), (1,), (0, 1)]


@pytest.mark.parametrize("use_gaussian", [True, False])
@pytest.mark.parametrize("mirror", [(), (0, 1, 2)])
def test_constant_network_gives_constant_map_3d(use_gaussian, mirror):
    image = torch.randn(2, 21, 30, 19)
    out = sliding_window_logits(ConstantNet(), image, (8, 12, 8), mirror_axes=mirror, use_gaussian=use_gaussian)
    assert out.shape == (3, 21, 30, 19) and out.dtype == torch.float32 and out.device.type == "cpu"
    for k, v in enumerate((1.0, -2.0, 0.5)):
        torch.testing.assert_close(out[k], torch.full((21, 30, 19), v), rtol=1e-6, atol=1e-6)


def test_constant_network_2d_with_deep_supervision_list():
    image = torch.randn(1, 50, 37)
    model = ConstantNet(ndim=2, as_list=True)
    out = sliding_window_logits(model, image, (16, 16), mirror_axes=(0, 1), batch_tiles=5)
    assert out.shape == (3, 50, 37)
    torch.testing.assert_close(out[1], torch.full((50, 37), -2.0))


@pytest.mark.parametrize("batch_tiles", [1, 3, 64])
def test_identity_network_returns_input_after_weight_normalisation(batch_tiles):
    image = torch.randn(2, 23, 31, 17)
    out = sliding_window_logits(IdentityNet(), image, (10, 12, 8), mirror_axes=(0, 2), batch_tiles=batch_tiles)
    torch.testing.assert_close(out, image, rtol=1e-5, atol=1e-5)


def test_gaussian_weights_sum_correctly_at_tile_overlap():
    # two tiles along X (starts 0 and 8), each predicting a constant: its first voxel (a for tile 0, b for tile 1)
    a, b = 3.0, -1.0
    image = torch.zeros(1, 16, 24)
    image[0, 0, 0], image[0, 0, 8] = a, b
    out = sliding_window_logits(TileMarkerNet(), image, (16, 16), batch_tiles=1)[0]
    g = np.exp(-0.5 * ((np.arange(16) - 7.5) / 2.0) ** 2)  # 1D Gaussian along X; the Y factor cancels
    expected = np.empty(24)
    expected[:8] = a
    expected[16:] = b
    x = np.arange(8, 16)
    expected[8:16] = (g[x] * a + g[x - 8] * b) / (g[x] + g[x - 8])
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(expected, (16, 24)), rtol=1e-5, atol=1e-6)
    # without the Gaussian the overlap is the plain average
    flat = sliding_window_logits(TileMarkerNet(), image, (16, 16), use_gaussian=False)[0]
    np.testing.assert_allclose(flat[:, 8:16].numpy(), (a + b) / 2, rtol=1e-6)


@pytest.mark.parametrize("shape", [(1, 5, 7, 9), (2, 20, 5, 30)])
def test_image_smaller_than_patch_keeps_input_size(shape):
    image = torch.randn(*shape)
    out = sliding_window_logits(IdentityNet(), image, (8, 8, 8), mirror_axes=(0, 1, 2))
    assert out.shape == shape
    torch.testing.assert_close(out, image, rtol=1e-5, atol=1e-5)


def _conv_net(ndim: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    conv = nn.Conv3d if ndim == 3 else nn.Conv2d
    return nn.Sequential(conv(1, 4, 3, padding=1), nn.LeakyReLU(0.1), conv(4, 2, 3, padding=1))


@pytest.mark.parametrize("ndim,shape,patch", [(3, (1, 12, 16, 10), (8, 8, 6)), (2, (1, 28, 20), (12, 12))])
def test_mirror_tta_makes_prediction_flip_equivariant(ndim, shape, patch):
    torch.manual_seed(1)
    image = torch.randn(*shape)
    model = _conv_net(ndim)
    axes = tuple(range(ndim))
    for a in axes:
        # tile positions along these axes are symmetric, so flipping the image flips the tiling
        pos = tile_positions(shape[1:], patch)[a]
        assert [shape[1 + a] - patch[a] - p for p in pos][::-1] == pos
    flip_dims = [1 + a for a in axes]
    tta = sliding_window_logits(model, image, patch, mirror_axes=axes)
    tta_flipped = sliding_window_logits(model, torch.flip(image, flip_dims), patch, mirror_axes=axes)
    torch.testing.assert_close(torch.flip(tta_flipped, flip_dims), tta, rtol=1e-4, atol=1e-5)
    plain = sliding_window_logits(model, image, patch)
    plain_flipped = sliding_window_logits(model, torch.flip(image, flip_dims), patch)
    assert (torch.flip(plain_flipped, flip_dims) - plain).abs().max() > 1e-3  # the network alone is not equivariant


def test_mirror_tta_averages_flipped_passes():
    # TTA over axis 0 of a 1-tile image equals the mean of f(x) and flip(f(flip(x)))
    torch.manual_seed(2)
    image = torch.randn(1, 12, 12)
    model = _conv_net(2, seed=3).eval()
    out = sliding_window_logits(model, image, (12, 12), mirror_axes=(0,))
    with torch.no_grad():
        direct = model(image[None])[0]
        flipped = torch.flip(model(torch.flip(image[None], [2]))[0], [1])
    torch.testing.assert_close(out, (direct + flipped) / 2, rtol=1e-5, atol=1e-6)


def test_predict_2d_from_3d_matches_slice_by_slice():
    torch.manual_seed(4)
    image = torch.randn(1, 5, 20, 26)
    model = _conv_net(2)
    out = predict_2d_from_3d(model, image, (12, 16), mirror_axes=(0, 1), batch_tiles=7)
    assert out.shape == (2, 5, 20, 26)
    per_slice = torch.stack(
        [sliding_window_logits(model, image[:, z], (12, 16), mirror_axes=(0, 1)) for z in range(5)], 1
    )
    torch.testing.assert_close(out, per_slice, rtol=1e-5, atol=1e-6)
    small = predict_2d_from_3d(IdentityNet(), image[:, :, :7, :9], (12, 16))
    torch.testing.assert_close(small, image[:, :, :7, :9], rtol=1e-5, atol=1e-6)


def test_model_mode_restored_and_output_is_a_normal_tensor():
    model = _conv_net(3)
    model.train()
    out = sliding_window_logits(model, torch.randn(1, 9, 9, 9), (8, 8, 8))
    assert model.training
    assert not out.is_inference()
    out += 1.0  # in-place updates (fold ensembles) must work outside inference mode


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="mirror axes"):
        sliding_window_logits(IdentityNet(), torch.zeros(1, 8, 8), (8, 8), mirror_axes=(2,))
    with pytest.raises(ValueError, match="does not fit a 3D patch"):
        sliding_window_logits(IdentityNet(), torch.zeros(8, 8, 8), (8, 8, 8))


def test_cuda_out_of_memory_falls_back_to_host_buffers(monkeypatch):
    calls = []

    def fake_accumulate(model, padded, patch, step, flips, batch_tiles, device, buffer_device, use_gaussian, max_batch):
        calls.append((batch_tiles, buffer_device.type, max_batch))
        if buffer_device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return torch.ones(1)

    monkeypatch.setattr(sw, "_accumulate", fake_accumulate)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    out = sw._run_with_fallback(None, torch.zeros(1, 8), (8,), 0.5, [()], 4, torch.device("cuda"), True, 4)
    assert calls == [(4, "cuda", 4), (1, "cpu", 1)]
    assert math.isclose(float(out[0]), 1.0)


class CountingNet(nn.Module):
    """A small conv net with instance norm that records the batch size of every forward pass."""

    def __init__(self, ndim: int = 3):
        super().__init__()
        torch.manual_seed(5)
        conv = nn.Conv3d if ndim == 3 else nn.Conv2d
        norm = nn.InstanceNorm3d if ndim == 3 else nn.InstanceNorm2d
        self.body = nn.Sequential(conv(2, 4, 3, padding=1), norm(4, affine=True), nn.LeakyReLU(0.01), conv(4, 3, 1))
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.body(x)


@pytest.mark.parametrize("batch_tiles,max_batch,largest", [(1, 8, 8), (2, 8, 8), (3, 5, 5), (4, 2, 2), (16, 64, 64)])
def test_batched_mirror_tta_equals_sequential_passes(batch_tiles, max_batch, largest):
    torch.manual_seed(6)
    image = torch.randn(2, 14, 19, 11)
    model = CountingNet()
    sequential = sliding_window_logits(model, image, (8, 10, 6), mirror_axes=(0, 1, 2), batch_tiles=1, max_batch=1)
    assert set(model.batches) == {1}  # one tile, one mirror per pass
    model.batches.clear()
    batched = sliding_window_logits(
        model, image, (8, 10, 6), mirror_axes=(0, 1, 2), batch_tiles=batch_tiles, max_batch=max_batch
    )
    torch.testing.assert_close(batched, sequential, rtol=1e-5, atol=1e-5)
    n_inputs = 3 * 3 * 3 * 8  # 27 tiles x 8 mirrored copies
    assert sum(model.batches) == n_inputs
    assert max(model.batches) == largest <= max_batch  # tiles x mirrors per pass, never more than max_batch


def test_tiles_without_mirroring_never_exceed_the_pass_bound():
    """TTA off, 4 tiles cut together: a bound of 1 input per pass (the CPU's for large patches) holds, and the
    result is the one of larger passes (a 105-class network at 96^3 made 4-tile passes of 1.5 GB output before)."""
    torch.manual_seed(7)
    image = torch.randn(2, 14, 19, 11)
    model = CountingNet()
    wide = sliding_window_logits(model, image, (8, 10, 6), batch_tiles=4, max_batch=4)
    assert max(model.batches) == 4
    model.batches.clear()
    narrow = sliding_window_logits(model, image, (8, 10, 6), batch_tiles=4, max_batch=1)
    assert set(model.batches) == {1} and len(model.batches) == 27
    torch.testing.assert_close(narrow, wide, rtol=1e-5, atol=1e-5)


def test_one_tile_with_all_mirrors_is_one_forward_pass_on_cpu():
    model = CountingNet()
    image = torch.randn(2, 8, 10, 6)
    out = sliding_window_logits(model, image, (8, 10, 6), mirror_axes=(0, 1, 2))
    assert model.batches == [8]  # default_max_batch on the CPU is 8: the 8 mirrored copies share a pass
    assert out.shape == (3, 8, 10, 6) and not out.is_inference()


def test_flip_groups_and_default_max_batch():
    flips = mirror_subsets((0, 1, 2))
    assert sw._flip_groups(1, flips, 8) == [flips]
    assert sw._flip_groups(3, flips, 8) == [flips[0:2], flips[2:4], flips[4:6], flips[6:8]]
    assert sw._flip_groups(16, flips, 8) == [[f] for f in flips]  # more tiles than the bound: one mirror per pass
    assert sw.default_max_batch("cpu", 4, (40, 56, 40)) == 8  # Hippocampus 3d_fullres: 8 x 89600 voxels <= 2**20
    assert sw.default_max_batch("cpu", 4, (128, 128, 128)) == 1  # large patches: one input per pass
    assert sw.default_max_batch("cpu", 4, (512, 512)) == 4
    assert sw.default_max_batch("cuda", 4, (40, 56, 40)) == 4  # GPU: the forward batch batch_tiles asks for
