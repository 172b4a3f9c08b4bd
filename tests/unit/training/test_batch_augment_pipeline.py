"""Batched torch augmentation: parameter draws follow nnU-Net's probabilities and ranges, image and label stay
aligned, and the pipeline's outputs are deterministic (the comparisons with batchgenerators: test_batch_augment.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_batch_augment import PATCHES, blobs, keep_global_generators, spec_for  # noqa: F401 - autouse fixture

from autoseg.errors import ConfigError
from autoseg.training.augment import (
    AugmentSpec,
    initial_patch_size,
)
from autoseg.training.batch_augment import (
    BatchPipeline,
    Contrast,
    Gamma,
    Mirror,
    Spatial,
    default_transforms,
    torch_default_pipeline,
    torch_validation_pipeline,
)
from autoseg.training.batch_augment.base import BatchTransform

# --------------------------------------------------------------------------------------- 2. draws: rates and ranges


def within_binomial(hit: torch.Tensor, p: float, sigmas: float = 4.5) -> bool:
    n = hit.numel()
    return abs(int(hit.sum()) - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1e-9


def test_draws_follow_probabilities_and_ranges():
    spec = spec_for(PATCHES["3d"], prev_stage_labels=(1, 2))
    n, channels = 10_000, 2
    gen = torch.Generator().manual_seed(0)
    transforms = {
        type(t).__name__ + ("Inv" if getattr(t, "invert", False) else ""): t for t in default_transforms(spec)
    }
    p = {k: t.draw(gen, n, channels) for k, t in transforms.items()}

    s = p["Spatial"]
    assert within_binomial(s.rotated, 0.2) and within_binomial(s.scaled, 0.2)
    assert s.angles.shape == (n, 3) and (s.angles[~s.rotated] == 0).all()
    rot = spec.rotation
    assert (s.angles.abs() <= rot).all() and (s.angles[s.rotated].abs() > 0.9 * rot).any()
    scale = s.scale[s.scaled]
    assert ((scale >= 0.7) & (scale <= 1.4)).all() and (s.scale[~s.scaled] == 1).all()
    assert within_binomial(scale < 1, 0.5)  # batchgenerators: half of the factors below 1
    assert within_binomial(p["GaussianNoise"].hit, 0.1)
    assert ((p["GaussianNoise"].sigma >= 0) & (p["GaussianNoise"].sigma <= 0.1)).all()
    blur = p["GaussianBlur"]
    assert within_binomial(blur.hit, 0.2) and within_binomial(blur.channel_hit, 0.5)
    assert blur.sigma.shape == (n, channels, 3) and ((blur.sigma >= 0.5) & (blur.sigma <= 1)).all()
    assert within_binomial(p["BrightnessMultiplicative"].hit, 0.15)
    assert ((p["BrightnessMultiplicative"].factor >= 0.75) & (p["BrightnessMultiplicative"].factor <= 1.25)).all()
    contrast = p["Contrast"]
    assert within_binomial(contrast.hit, 0.15) and within_binomial(contrast.factor < 1, 0.5)
    assert ((contrast.factor >= 0.75) & (contrast.factor <= 1.25)).all()
    low = p["SimulateLowResolution"]
    assert within_binomial(low.hit, 0.25) and within_binomial(low.channel_hit, 0.5)
    assert ((low.zoom >= 0.5) & (low.zoom <= 1)).all()
    for key, rate in (("GammaInv", 0.1), ("Gamma", 0.3)):
        assert within_binomial(p[key].hit, rate) and within_binomial(p[key].factor < 1, 0.5)
        assert ((p[key].factor >= 0.7) & (p[key].factor <= 1.5)).all()
    assert p["Mirror"].flips.shape == (n, 3) and all(within_binomial(f, 0.5) for f in p["Mirror"].flips.T)
    cascade = p["PrevStageToData"]
    assert within_binomial(cascade.morph, 0.4) and within_binomial(cascade.dilate, 0.5)
    assert within_binomial(cascade.component, 0.2)
    assert set(cascade.iterations.unique().tolist()) == set(range(1, 9))


# ------------------------------------------------------------------------------------------------ 3. alignment


@pytest.mark.parametrize("patch", [(24, 32, 24), (40, 40)])
def test_spatial_and_mirror_keep_image_and_label_aligned(patch):
    spec = spec_for(patch)
    size = initial_patch_size(patch, spec.rotation, spec.dummy_2d)
    data, seg = blobs(size, batch=4, seed=3, noise=0.0)
    seg = (data[:, :1] > 0.5).astype(np.int16)
    transforms = [Spatial(patch, spec.rotation, spec.dummy_2d, 1.0, 1.0), Mirror(spec.mirror_axes)]
    pipe = BatchPipeline(size, transforms, lambda s: [s])
    out, (lab,) = pipe(torch.from_numpy(data), torch.from_numpy(seg), torch.Generator().manual_seed(3))
    img, lab = out.numpy()[:, 0], lab.numpy()[:, 0]
    for b in range(len(img)):
        fg_img, fg_lab = img[b] > 0.5, lab[b] == 1
        dice = 2 * (fg_img & fg_lab).sum() / (fg_img.sum() + fg_lab.sum())
        assert dice > 0.9  # only voxels at the blob border may differ (linear image vs nearest label)
    assert not np.allclose(img, data[(slice(None), 0) + tuple(slice(0, p) for p in patch)])  # it did transform


# ------------------------------------------------------------------------------- 4. determinism and output contract


@pytest.mark.parametrize("kind", ["3d", "dummy_2d", "2d"])
def test_default_pipeline_outputs_and_determinism(kind):
    patch = PATCHES[kind]
    spec = spec_for(patch, mask_channels=(1,))
    pipe = torch_default_pipeline(spec)
    assert pipe.sample_size == initial_patch_size(patch, spec.rotation, spec.dummy_2d)
    data, seg = blobs(pipe.sample_size, batch=6, channels=2, seed=14)
    data_t, seg_t = torch.from_numpy(data).to(torch.float16), torch.from_numpy(seg).to(torch.int8)
    outs = [pipe(data_t, seg_t, torch.Generator().manual_seed(s)) for s in (5, 5, 6)]
    (out, targets), (again, targets_again), (other, _) = outs
    assert out.shape == (6, 2, *patch) and out.dtype == torch.float32
    assert [t.shape for t in targets] == [(6, 1, *patch), (6, 1, *(v // 2 for v in patch))]
    assert all(t.dtype == torch.int64 and t.min() >= 0 and t.max() <= 2 for t in targets)
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(targets, targets_again))
    assert not torch.equal(out, other)
    np.testing.assert_array_equal(data_t.numpy(), data.astype(np.float16))  # inputs untouched
    np.testing.assert_array_equal(seg_t.numpy(), seg)


def test_mask_sets_image_outside_to_zero():
    spec = AugmentSpec((4, 8, 8), ((1, 1, 1),), 0.0, False, (), mask_channels=(0,))
    pipe = torch_default_pipeline(spec)
    for seed in range(3):
        data = torch.full((2, 1, *pipe.sample_size), 5.0)
        seg = torch.ones((2, 1, *pipe.sample_size), dtype=torch.int16)
        seg[..., : pipe.sample_size[-1] // 2] = -1
        out, targets = pipe(data, seg, torch.Generator().manual_seed(seed))
        outside = targets[0][:, 0] == 0  # -1 before the label replacement
        assert outside.any() and (out[:, 0][outside] == 0).all()
        assert (out[:, 0][~outside] != 0).float().mean() > 0.99


def test_cascade_pipeline_adds_one_hot_channels():
    spec = spec_for(PATCHES["3d"], prev_stage_labels=(1, 2))
    pipe = torch_default_pipeline(spec)
    data, seg = blobs(pipe.sample_size, batch=4, channels=1, seed=15)
    seg = np.concatenate([seg, np.clip(seg, 0, None)], 1)
    out, targets = pipe(torch.from_numpy(data), torch.from_numpy(seg), torch.Generator().manual_seed(1))
    assert out.shape == (4, 3, *spec.patch_size) and [t.shape[1] for t in targets] == [1, 1]
    hot = out[:, 1:]
    assert set(hot.unique().tolist()) <= {0.0, 1.0} and (hot.sum(1) <= 1).all()
    clean, _ = torch_validation_pipeline(spec)(
        torch.from_numpy(data[(slice(None),) * 2 + tuple(slice(0, p) for p in spec.patch_size)]),
        torch.from_numpy(seg[(slice(None),) * 2 + tuple(slice(0, p) for p in spec.patch_size)]),
        torch.Generator(),
    )
    assert clean.shape == (4, 3, *spec.patch_size)


class AddOne(BatchTransform[None]):
    def draw(self, gen, batch_size, channels):
        return None

    def apply(self, data, seg, params):
        return data + 1, seg


def test_transform_list_is_editable_and_settings_are_checked():
    spec = spec_for(PATCHES["2d"])
    base = torch_validation_pipeline(spec)
    custom = BatchPipeline(base.sample_size, [AddOne(), *base.transforms], base.finish)
    data, seg = torch.zeros(1, 1, *spec.patch_size), torch.zeros(1, 1, *spec.patch_size, dtype=torch.int16)
    assert (custom(data, seg, torch.Generator())[0] == 1).all()
    with pytest.raises(ConfigError, match="probability"):
        Gamma(1.5)
    with pytest.raises(ConfigError, match="low <= high"):
        Contrast(contrast_range=(1.25, 0.75))
    with pytest.raises(ConfigError, match="BatchTransform"):
        BatchPipeline((4, 4), [lambda d, s: (d, s)], base.finish)
    with pytest.raises(ValueError, match="spatial size"):
        base(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 5, 5, dtype=torch.int16), torch.Generator())
    with pytest.raises(TypeError, match="signed integer seg"):
        base(data, seg.to(torch.uint8), torch.Generator())
