"""Batched torch augmentation (autoseg.training.batch_augment) against batchgenerators v1, parameter draws, alignment,
determinism and output contracts.

Comparisons with batchgenerators feed both sides the same parameters: batchgenerators draws from numpy's (and for the
blur sigma Python's) global generator, so the tests seed it, run the batchgenerators transform with p = 1 and then
replay its draw sequence to build the torch transform's parameters. Image tolerance 1e-5 on data of magnitude ~1:
the torch side computes in float32 where batchgenerators uses float64 (scipy/skimage interpolation and filters, grid
coordinates, statistics), so the differences are float32 rounding (at most 1.2e-6 observed); a wrong parameter, index
or border rule gives differences of order 0.1. Labels must agree on >= 99.9 % of the voxels (100 % observed).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from batchgenerators.transforms.abstract_transforms import Compose
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    ContrastAugmentationTransform,
    GammaTransform,
)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform
from scipy import ndimage

from autoseg.training.augment import (
    AugmentSpec,
    initial_patch_size,
    rotation_settings,
    spatial_transforms,
)
from autoseg.training.augment import PrevStageToData as NumpyPrevStageToData
from autoseg.training.batch_augment import (
    BrightnessMultiplicative,
    Contrast,
    Gamma,
    GaussianBlur,
    GaussianNoise,
    Mirror,
    PrevStageToData,
    SimulateLowResolution,
    Spatial,
    torch_validation_pipeline,
)
from autoseg.training.batch_augment.cascade import CascadeParams, iterate_cross_dilation
from autoseg.training.batch_augment.intensity import BlurParams, FactorParams, NoiseParams
from autoseg.training.batch_augment.resolution import LowResParams
from autoseg.training.batch_augment.spatial import MirrorParams, SpatialParams, affine_grid
from autoseg.training.pipelines import build_pipeline

IMAGE_TOL = 1e-5
PATCHES = {"3d": (16, 20, 14), "dummy_2d": (4, 36, 32), "2d": (28, 24)}


@pytest.fixture(autouse=True)
def keep_global_generators():
    """batchgenerators draws from numpy's and Python's global generators: restore them after each test."""
    saved = np.random.get_state(), random.getstate()
    yield
    np.random.set_state(saved[0])
    random.setstate(saved[1])


def blobs(shape, batch=2, channels=1, seed=0, noise=0.05):
    """Smooth random ellipsoids plus a little noise: data (B, C, *shape) float32 around [0, 1]; seg (B, 1, *shape)
    int16 with labels 0/1/2 from channel 0 and -1 on the first two planes of axis 0 (outside the image)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij")
    data = np.empty((batch, channels, *shape), np.float32)
    for b in range(batch):
        for c in range(channels):
            centre = [rng.uniform(0.35 * s, 0.65 * s) for s in shape]
            r2 = sum(((g - m) / (0.25 * s)) ** 2 for g, m, s in zip(grids, centre, shape))
            data[b, c] = np.exp(-r2) + noise * rng.normal(size=shape)
    seg = (data[:, :1] > 0.5).astype(np.int16) + (data[:, :1] > 0.8)
    seg[:, :, :2] = -1
    return data, seg


def spec_for(patch, **kwargs) -> AugmentSpec:
    rotation, dummy = rotation_settings(patch)
    factors = ((1,) * len(patch), (2,) * len(patch))
    return AugmentSpec(tuple(patch), factors, rotation, dummy, tuple(range(len(patch))), **kwargs)


def torch_apply(transform, data, seg, params):
    out, out_seg = transform.apply(torch.from_numpy(data.copy()), torch.from_numpy(seg.copy()), params)
    return out.numpy(), out_seg.numpy()


def run_bg(transform, data, seg, seed):
    np.random.seed(seed)
    random.seed(seed)
    out = transform(data=data.copy(), seg=seg.copy())
    np.random.seed(seed)  # the caller replays the draws from here
    random.seed(seed)
    return out["data"], out["seg"]


def all_hit(batch, channels=None):
    return torch.ones(batch, dtype=torch.bool) if channels is None else torch.ones(batch, channels, dtype=torch.bool)


# ------------------------------------------------------------------------------------ 1. against batchgenerators v1


@pytest.mark.parametrize("kind", ["3d", "dummy_2d", "2d", "2d_tight"])
def test_spatial_matches_batchgenerators(kind):
    """2d_tight: the sample is only as large as the patch, so rotated corners fall outside it (0 / -1 there)."""
    patch = PATCHES[kind.removesuffix("_tight")]
    spec = spec_for(patch)
    size = patch if kind.endswith("tight") else initial_patch_size(patch, spec.rotation, spec.dummy_2d)
    data, seg = blobs(size, batch=3, channels=2, seed=1)
    ref_data, ref_seg = run_bg(Compose(spatial_transforms(spec, p_rotation=1, p_scaling=1)), data, seg, seed=4)
    n_angles = 3 if kind == "3d" else 1
    angles, scale = np.zeros((3, n_angles)), np.ones(3)
    for b in range(3):  # replay augment_spatial's draws
        np.random.uniform()
        for i in range(n_angles):
            np.random.uniform()
            angles[b, i] = np.random.uniform(-spec.rotation, spec.rotation)
        np.random.uniform()
        below = np.random.random() < 0.5
        scale[b] = np.random.uniform(0.7, 1) if below else np.random.uniform(1, 1.4)
    params = SpatialParams(all_hit(3), torch.from_numpy(angles), all_hit(3), torch.from_numpy(scale))
    out, out_seg = torch_apply(Spatial(patch, spec.rotation, spec.dummy_2d), data, seg, params)
    assert out.shape == ref_data.shape == (3, 2, *patch)
    assert np.abs(out - ref_data).max() < IMAGE_TOL
    assert (out_seg == ref_seg).mean() >= 0.999
    if kind.endswith("tight"):
        assert (ref_seg[:, :, 2:] == -1).any() and (ref_data == 0).any()  # points outside the sample


@pytest.mark.filterwarnings("ignore:Since version 1.3.0, affine_grid")  # unit-size axis: both use coordinate 0
@pytest.mark.parametrize("size", [(5, 7, 6), (9, 8), (1, 6, 5)])
def test_affine_grid_equals_torch_affine_grid(size):
    theta = torch.randn(3, len(size), len(size) + 1, generator=torch.Generator().manual_seed(0))
    grid, inside = affine_grid(theta, size)
    expected = F.affine_grid(theta, [3, 1, *size], align_corners=True)
    torch.testing.assert_close(grid, expected, rtol=0, atol=1e-6)
    assert torch.equal(inside[:, 0], ((grid >= -1) & (grid <= 1)).all(-1))


@pytest.mark.parametrize("kind", ["3d", "dummy_2d", "2d"])
def test_untransformed_samples_are_centre_crops_bit_exactly(kind):
    patch = PATCHES[kind]
    spec = spec_for(patch)
    size = initial_patch_size(patch, spec.rotation, spec.dummy_2d)
    data, seg = blobs(size, batch=2, seed=2)
    ref_data, ref_seg = run_bg(Compose(spatial_transforms(spec, p_rotation=0, p_scaling=0)), data, seg, seed=0)
    none = torch.zeros(2, dtype=torch.bool)
    params = SpatialParams(none, torch.zeros(2, 3 if kind == "3d" else 1, dtype=torch.float64), none, torch.ones(2))
    out, out_seg = torch_apply(Spatial(patch, spec.rotation, spec.dummy_2d), data, seg, params)
    np.testing.assert_array_equal(out, ref_data)
    np.testing.assert_array_equal(out_seg, ref_seg)


def test_rotation_only_and_scaling_only_mix_with_crops_in_one_batch():
    patch = PATCHES["3d"]
    spec = spec_for(patch)
    size = initial_patch_size(patch, spec.rotation, False)
    data, seg = blobs(size, batch=3, seed=3)
    rotated, scaled = torch.tensor([True, False, False]), torch.tensor([False, True, False])
    angles = torch.tensor([[0.3, -0.2, 0.1], [0, 0, 0], [0, 0, 0]], dtype=torch.float64)
    params = SpatialParams(rotated, angles, scaled, torch.tensor([1.0, 0.8, 1.0], dtype=torch.float64))
    out, _ = torch_apply(Spatial(patch, spec.rotation), data, seg, params)
    crop = data[(slice(None), slice(None)) + tuple(slice((s - p) // 2, (s - p) // 2 + p) for s, p in zip(size, patch))]
    np.testing.assert_array_equal(out[2], crop[2])
    assert not np.allclose(out[0], crop[0]) and not np.allclose(out[1], crop[1])


def test_gaussian_noise_distribution():
    # batchgenerators uses its "noise_variance" as the standard deviation; so does GaussianNoise
    zeros = np.zeros((2, 2, 24, 24, 24), np.float32)
    seg = np.zeros((2, 1, 24, 24, 24), np.int16)
    ref, _ = run_bg(GaussianNoiseTransform(noise_variance=(0.05, 0.05), p_per_sample=1), zeros, seg, seed=0)
    params = NoiseParams(torch.tensor([True, False]), torch.tensor([0.05, 0.05], dtype=torch.float64), seed=7)
    out, _ = torch_apply(GaussianNoise(), zeros, seg, params)
    assert ref.std() == pytest.approx(0.05, rel=0.02) and ref.mean() == pytest.approx(0, abs=1e-3)
    assert out[0].std() == pytest.approx(0.05, rel=0.02) and out[0].mean() == pytest.approx(0, abs=1e-3)
    assert abs(float(np.mean(out[0] ** 4)) / 0.05**4 - 3) < 0.15  # Gaussian kurtosis
    assert (out[1] == 0).all()  # not hit: untouched
    again, _ = torch_apply(GaussianNoise(), zeros, seg, params)
    np.testing.assert_array_equal(out, again)  # the field comes from the drawn seed


def test_gaussian_blur_matches_batchgenerators():
    data, seg = blobs((14, 18, 16), batch=2, channels=2, seed=4, noise=0.3)
    bg = GaussianBlurTransform(
        (0.5, 1.0), different_sigma_per_channel=True, different_sigma_per_axis=True, p_per_sample=1, p_per_channel=1
    )
    ref, _ = run_bg(bg, data, seg, seed=5)
    sigma = torch.tensor([[[random.uniform(0.5, 1.0) for _ in range(3)] for _ in range(2)] for _ in range(2)])
    params = BlurParams(all_hit(2), all_hit(2, 2), sigma.to(torch.float64))
    out, _ = torch_apply(GaussianBlur(3), data, seg, params)
    assert np.abs(out - ref).max() < IMAGE_TOL
    assert np.abs(out - data).max() > 0.1  # it did blur


def test_gaussian_blur_per_channel_hits_and_2d():
    data, seg = blobs((20, 17), batch=2, channels=2, seed=5, noise=0.3)
    sigma = torch.tensor([[[0.5, 1.0], [0.7, 0.9]], [[0.99, 0.51], [0.6, 0.6]]], dtype=torch.float64)
    channel_hit = torch.tensor([[True, False], [False, True]])
    out, _ = torch_apply(GaussianBlur(2), data, seg, BlurParams(all_hit(2), channel_hit, sigma))
    for b in range(2):
        for c in range(2):
            expect = ndimage.gaussian_filter(data[b, c], sigma[b, c].tolist()) if channel_hit[b, c] else data[b, c]
            assert np.abs(out[b, c] - expect).max() < IMAGE_TOL


def test_brightness_matches_batchgenerators():
    data, seg = blobs((8, 10, 12), batch=3, channels=2, seed=6)
    ref, _ = run_bg(BrightnessMultiplicativeTransform((0.75, 1.25), p_per_sample=1), data, seg, seed=6)
    factor = np.zeros((3, 2))
    for b in range(3):
        np.random.uniform(), np.random.uniform(0.75, 1.25)  # p draw and the unused all-channel multiplier
        factor[b] = [np.random.uniform(0.75, 1.25) for _ in range(2)]
    out, _ = torch_apply(BrightnessMultiplicative(), data, seg, FactorParams(all_hit(3), torch.from_numpy(factor)))
    assert np.abs(out - ref).max() < IMAGE_TOL


def replay_split_factors(batch, channels, low, high, extra_channel_draw):
    """batchgenerators' per-channel 'half below 1' factors after a p_per_sample draw per sample."""
    factor = np.zeros((batch, channels))
    for b in range(batch):
        np.random.uniform()
        for c in range(channels):
            if extra_channel_draw:
                np.random.uniform()  # p_per_channel
            below = np.random.random() < 0.5
            factor[b, c] = np.random.uniform(low, 1) if below else np.random.uniform(1, high)
    return torch.from_numpy(factor)


def test_contrast_matches_batchgenerators():
    data, seg = blobs((8, 10, 12), batch=4, channels=2, seed=7)
    ref, _ = run_bg(ContrastAugmentationTransform((0.75, 1.25), preserve_range=True, p_per_sample=1), data, seg, 7)
    factor = replay_split_factors(4, 2, 0.75, 1.25, extra_channel_draw=True)
    out, _ = torch_apply(Contrast(), data, seg, FactorParams(all_hit(4), factor))
    assert (factor < 1).any() and (factor > 1).any()
    assert np.abs(out - ref).max() < IMAGE_TOL


@pytest.mark.parametrize("invert", [False, True])
def test_gamma_matches_batchgenerators(invert):
    data, seg = blobs((8, 10, 12), batch=4, channels=2, seed=8)
    bg = GammaTransform((0.7, 1.5), invert_image=invert, per_channel=True, retain_stats=True, p_per_sample=1)
    ref, _ = run_bg(bg, data, seg, seed=8)
    gamma = replay_split_factors(4, 2, 0.7, 1.5, extra_channel_draw=False)
    out, _ = torch_apply(Gamma(1.0, invert=invert), data, seg, FactorParams(all_hit(4), gamma))
    assert np.abs(out - ref).max() < IMAGE_TOL
    assert np.abs(out - data).max() > 0.01


@pytest.mark.parametrize("kind", ["3d", "dummy_2d", "2d"])
def test_low_resolution_matches_batchgenerators(kind):
    shape = {"3d": (15, 18, 13), "dummy_2d": (5, 24, 21), "2d": (29, 22)}[kind]
    ignore = (0,) if kind == "dummy_2d" else None
    data, seg = blobs(shape, batch=3, channels=2, seed=9, noise=0.2)
    orders = dict(order_downsample=0, order_upsample=1)
    bg = SimulateLowResolutionTransform((0.5, 1), True, 1, **orders, p_per_sample=1, ignore_axes=ignore)
    ref, _ = run_bg(bg, data, seg, seed=9)
    zoom = np.zeros((3, 2))
    for b in range(3):
        np.random.uniform()
        for c in range(2):
            np.random.uniform()
            zoom[b, c] = np.random.uniform(0.5, 1)
    transform = SimulateLowResolution(len(shape), ignore_axes=ignore or ())
    out, _ = torch_apply(transform, data, seg, LowResParams(all_hit(3), all_hit(3, 2), torch.from_numpy(zoom)))
    assert np.abs(out - ref).max() < IMAGE_TOL


def test_mirror_matches_batchgenerators():
    data, seg = blobs((6, 7, 8), batch=6, channels=2, seed=10)
    ref_data, ref_seg = run_bg(MirrorTransform((0, 1, 2)), data, seg, seed=10)
    flips = np.zeros((6, 3), bool)
    for b in range(6):
        np.random.uniform()
        flips[b] = [np.random.uniform() < 0.5 for _ in range(3)]
    out, out_seg = torch_apply(Mirror((0, 1, 2)), data, seg, MirrorParams(torch.from_numpy(flips)))
    np.testing.assert_array_equal(out, ref_data)
    np.testing.assert_array_equal(out_seg, ref_seg)


def test_cascade_degradation_matches_numpy_prev_stage(monkeypatch):
    rng = np.random.default_rng(11)
    prev = ndimage.zoom(rng.integers(0, 3, (2, 4, 4, 4)), (1, 4, 4, 4), order=0).astype(np.int16)  # blocky labels
    prev[:, 2:6, 2:6, 2:6] = 1  # a second component of label 1
    seg = np.stack([np.zeros_like(prev), prev], 1)
    data = np.zeros((2, 1, 16, 16, 16), np.float32)
    draws = []
    uniform, randint = np.random.uniform, np.random.randint

    def record_uniform(*args, **kwargs):
        draws.append(("u", uniform(*args, **kwargs)))
        return draws[-1][1]

    def record_randint(low, high=None, *args, **kwargs):
        draws.append(("r", randint(low, high, *args, **kwargs), high))
        return draws[-1][1]

    monkeypatch.setattr(np.random, "uniform", record_uniform)
    monkeypatch.setattr(np.random, "randint", record_randint)
    np.random.seed(3)
    ref = NumpyPrevStageToData((1, 2), p_morph=0.7, p_component=0.7)(data=data.copy(), seg=seg.copy())
    monkeypatch.undo()
    morph, dilate, component = (torch.zeros(2, 2, dtype=torch.bool) for _ in range(3))
    iterations, pick = torch.ones(2, 2, dtype=torch.int64), torch.zeros(2, 2, dtype=torch.float64)
    for b in range(2):  # replay PrevStageToData._degrade's draws
        for c in range(2):
            if draws.pop(0)[1] < 0.7:
                morph[b, c], iterations[b, c] = True, draws.pop(0)[1]
                dilate[b, c] = draws.pop(0)[1] < 0.5
            if draws.pop(0)[1] < 0.7:
                component[b, c] = True
                if draws and draws[0][0] == "r":
                    _, k, high = draws.pop(0)
                    pick[b, c] = (k - 0.5) / (high - 1)
    assert morph.any() and component.any() and dilate.any() and (morph & ~dilate).any()
    params = CascadeParams(morph, dilate, iterations, component, pick)
    out, out_seg = torch_apply(PrevStageToData((1, 2)), data, seg, params)
    np.testing.assert_array_equal(out, ref["data"])
    np.testing.assert_array_equal(out_seg, ref["seg"])


@pytest.mark.parametrize("shape", [(12, 13, 11), (17, 15)])
def test_cross_dilation_and_erosion_match_scipy(shape):
    masks = torch.from_numpy(np.random.default_rng(12).random((4, *shape)) > 0.8)
    iterations = torch.tensor([1, 2, 5, 8])
    dilated = iterate_cross_dilation(masks, iterations, border=False).numpy()
    eroded = ~iterate_cross_dilation(~masks, iterations, border=True).numpy()
    dense = ndimage.binary_dilation(masks.numpy()[0], iterations=2)  # a dense mask to erode
    eroded_dense = ~iterate_cross_dilation(torch.from_numpy(~dense)[None], torch.tensor([3]), border=True).numpy()
    for i, k in enumerate(iterations.tolist()):
        np.testing.assert_array_equal(dilated[i], ndimage.binary_dilation(masks.numpy()[i], iterations=k))
        np.testing.assert_array_equal(eroded[i], ndimage.binary_erosion(masks.numpy()[i], iterations=k))
    np.testing.assert_array_equal(eroded_dense[0], ndimage.binary_erosion(dense, iterations=3))
    assert eroded_dense.any()


@pytest.mark.parametrize("kind", ["3d", "dummy_2d"])
def test_validation_pipeline_matches_none_pipeline(kind):
    spec = spec_for(PATCHES[kind], prev_stage_labels=(1, 2))
    data, seg = blobs(spec.patch_size, batch=2, channels=2, seed=13)
    seg = np.concatenate([seg, np.clip(seg, 0, None)[:, :, ::-1].copy()], 1)
    ref_data, ref_targets = build_pipeline("none", spec)(data.copy(), seg.copy())
    out, targets = torch_validation_pipeline(spec)(torch.from_numpy(data), torch.from_numpy(seg), torch.Generator())
    np.testing.assert_array_equal(out.numpy(), ref_data)
    assert len(targets) == len(ref_targets) == 2
    for t, r in zip(targets, ref_targets):
        np.testing.assert_array_equal(t.numpy(), r)
