import math

import numpy as np
import pytest
from batchgenerators.transforms.abstract_transforms import Compose
from batchgenerators.transforms.spatial_transforms import MirrorTransform

from autoseg.errors import ConfigError
from autoseg.planning.plans import Configuration, NetworkSpec
from autoseg.training.augment import (
    AugmentSpec,
    augment_spec,
    deep_supervision_factors,
    initial_patch_size,
    rotation_settings,
    spatial_transforms,
)
from autoseg.training.pipelines import build_pipeline


def config(patch, strides, use_mask=(False,)):
    params = {"n_stages": len(strides), "strides": strides}
    return Configuration(
        "c",
        "d",
        (1.0,) * len(patch),
        tuple(patch),
        tuple(patch),
        2,
        False,
        ("zscore",) * len(use_mask),
        tuple(use_mask),
        NetworkSpec("unet", params),
    )


def blob_batch(shape, batch=2, channels=1, seed=0):
    """Smooth random-centred ellipsoids: data in [0, 1], seg = data > 0.5 (labels 0/1)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij")
    data = np.empty((batch, channels, *shape), np.float32)
    for b in range(batch):
        centre = [rng.uniform(0.35 * s, 0.65 * s) for s in shape]
        r2 = sum(((g - c) / (0.25 * s)) ** 2 for g, c, s in zip(grids, centre, shape))
        data[b] = np.exp(-r2)[None]
    return data, (data[:, :1] > 0.5).astype(np.int16)


def test_deep_supervision_factors_are_cumulative_strides_without_the_last():
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 1], [1, 2, 2]]
    assert deep_supervision_factors(strides, True) == ((1, 1, 1), (2, 2, 2), (4, 4, 2))
    assert deep_supervision_factors(strides, False) == ((1, 1, 1),)


def test_rotation_rules():
    assert rotation_settings((40, 56, 40)) == (pytest.approx(math.radians(30)), False)
    assert rotation_settings((8, 160, 160)) == (pytest.approx(math.pi), True)  # 160 / 8 > 3: dummy 2D
    assert rotation_settings((256, 224)) == (pytest.approx(math.pi), False)
    assert rotation_settings((512, 128)) == (pytest.approx(math.radians(15)), False)  # aspect > 1.5


def test_initial_patch_covers_rotation_and_zoom_out():
    # 3D, 30 degrees: a 56 x 40 plane rotated by 30 degrees spans 56 cos + 40 sin = 68.5
    size = initial_patch_size((40, 56, 40), math.radians(30), False)
    assert size[1] == math.floor((56 * math.cos(math.pi / 6) + 40 * math.sin(math.pi / 6)) / 0.85)
    assert all(s >= p / 0.85 - 1 for s, p in zip(size, (40, 56, 40)))
    # 2D, any angle: the worst case is 45 degrees, (a + b) / sqrt(2)
    assert initial_patch_size((32, 32), math.pi, False) == (math.floor(64 / math.sqrt(2) / 0.85),) * 2
    # dummy 2D keeps the slice axis
    assert initial_patch_size((8, 64, 64), math.pi, True)[0] == 8


@pytest.mark.parametrize(
    "patch, strides, expect_dummy",
    [
        ((16, 24, 16), [[1, 1, 1], [2, 2, 2], [2, 2, 2]], False),
        ((4, 32, 32), [[1, 1, 1], [1, 2, 2], [2, 2, 2]], True),
        ((32, 24), [[1, 1], [2, 2], [2, 2]], False),
    ],
)
def test_default_pipeline_shapes_and_types(patch, strides, expect_dummy):
    spec = augment_spec(config(patch, strides, use_mask=(False, True)))
    assert spec.dummy_2d is expect_dummy and spec.mask_channels == (1,)
    pipe = build_pipeline("batchgenerators", spec)
    np.random.seed(0)
    data, seg = blob_batch(pipe.sample_size, batch=3, channels=2)
    seg[:, :, :2] = -1  # outside the image
    out, targets = pipe(data, seg)
    assert out.shape == (3, 2, *patch) and out.dtype == np.float32
    assert [t.shape for t in targets] == [
        (3, 1, *(p // f for p, f in zip(patch, fac))) for fac in deep_supervision_factors(strides, True)
    ]
    assert all(t.dtype == np.int64 and t.min() >= 0 and t.max() <= 1 for t in targets)


def test_deep_supervision_targets_are_nearest_subsamples():
    spec = augment_spec(config((8, 16, 16), [[1, 1, 1], [2, 2, 2], [2, 4, 4]]))
    seg = np.random.default_rng(1).integers(0, 3, (2, 1, 8, 16, 16)).astype(np.int16)
    _, targets = build_pipeline("none", spec)(np.zeros((2, 1, 8, 16, 16), np.float32), seg)
    assert len(targets) == 2
    np.testing.assert_array_equal(targets[0], seg)
    np.testing.assert_array_equal(targets[1], seg[:, :, 1::2, 1::2, 1::2])


def test_none_pipeline_replaces_minus_one_and_keeps_data():
    spec = augment_spec(config((4, 8, 8), [[1, 1, 1], [2, 2, 2]]), deep_supervision=False)
    data = np.random.default_rng(0).normal(size=(1, 1, 4, 8, 8)).astype(np.float32)
    seg = np.full((1, 1, 4, 8, 8), -1, np.int16)
    seg[..., 2:, :, :] = 2
    out, targets = build_pipeline("none", spec)(data.copy(), seg)
    np.testing.assert_array_equal(out, data)
    assert len(targets) == 1
    assert (targets[0][..., :2, :, :] == 0).all() and (targets[0][..., 2:, :, :] == 2).all()


@pytest.mark.parametrize("patch", [(24, 32, 24), (40, 40)])
def test_spatial_and_mirror_keep_image_and_label_aligned(patch):
    strides = [[1] * len(patch), [2] * len(patch)]
    spec = augment_spec(config(patch, strides))
    size = initial_patch_size(patch, spec.rotation, spec.dummy_2d)
    np.random.seed(3)
    data, seg = blob_batch(size, batch=4, seed=3)
    out = Compose(spatial_transforms(spec, p_rotation=1, p_scaling=1) + [MirrorTransform(spec.mirror_axes)])(
        data=data, seg=seg
    )
    img, lab = out["data"][:, 0], out["seg"][:, 0]
    for b in range(len(img)):
        fg_img, fg_lab = img[b] > 0.5, lab[b] == 1
        dice = 2 * (fg_img & fg_lab).sum() / (fg_img.sum() + fg_lab.sum())
        assert dice > 0.9  # only voxels at the blob border may differ (linear image vs nearest label)
    assert not np.allclose(img, data[(slice(None), 0) + tuple(slice(0, p) for p in patch)])  # it did transform


def test_mask_sets_image_outside_to_zero():
    spec = AugmentSpec((4, 8, 8), ((1, 1, 1),), 0.0, False, (), mask_channels=(0,))
    pipe = build_pipeline("batchgenerators", spec)
    for seed in range(3):
        np.random.seed(seed)
        data = np.full((2, 1, *pipe.sample_size), 5.0, np.float32)
        seg = np.ones((2, 1, *pipe.sample_size), np.int16)
        seg[..., : pipe.sample_size[-1] // 2] = -1
        out, targets = pipe(data, seg)
        outside = targets[0][:, 0] == 0  # -1 before the label removal
        assert outside.any() and (out[:, 0][outside] == 0).all()
        assert (out[:, 0][~outside] != 0).mean() > 0.99


def test_unknown_augmentation_lists_known_names():
    spec = augment_spec(config((8, 8, 8), [[1, 1, 1]]))
    known = "unknown augmentation 'defualt'.*batchgenerators, default, none.*Did you mean 'default'"
    with pytest.raises(ConfigError, match=known):
        build_pipeline("defualt", spec)
