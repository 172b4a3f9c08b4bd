from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import resize

from autoseg.preprocessing import resample as R


@pytest.mark.parametrize(
    "current, target, expected",
    [
        ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), None),  # isotropic
        ((3.0, 1.0, 1.0), (3.0, 1.0, 1.0), None),  # ratio exactly 3: not > 3
        ((3.01, 1.0, 1.0), (1.0, 1.0, 1.0), 0),  # current spacing decides
        ((1.0, 5.0, 1.0), (1.0, 1.0, 1.0), 1),  # any axis can be the coarse one
        ((1.0, 1.0, 1.0), (1.0, 1.0, 4.0), 2),  # else the target spacing decides
        ((0.24, 1.25, 1.25), (1.0, 1.0, 1.0), None),  # two axes tie for the largest spacing
        ((0.24, 1.25, 1.25), (5.0, 1.0, 1.0), None),  # a tie in the current spacing is final
        ((5.0, 5.0, 5.0), (1.0, 1.0, 5.0), 2),  # all equal: not anisotropic, target decides
        ((999.0, 1.0, 1.0), (999.0, 0.5, 0.5), 0),  # 2D data: the pseudo slice axis
    ],
)
def test_separate_z_rule(current, target, expected):
    assert R.separate_z_axis(current, target, 3.0) == expected


def test_separate_z_threshold_is_configurable():
    assert R.separate_z_axis((2.5, 1.0, 1.0), (2.5, 1.0, 1.0), 2.0) == 0
    assert R.separate_z_axis((2.5, 1.0, 1.0), (2.5, 1.0, 1.0), 3.0) is None


def test_new_shape_rounds_like_nnunet():
    assert R.compute_new_shape((10, 20, 30), (2.0, 1.0, 0.7), (1.0, 1.0, 1.0)) == (20, 20, 21)
    assert R.compute_new_shape((1, 20, 30), (999.0, 1.0, 1.0), (999.0, 0.5, 2.0)) == (1, 40, 15)


def test_same_shape_is_identity():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2, 5, 6, 7)).astype(np.float32)
    assert R.resample_data(data, (5, 6, 7), None, 3, 0) is data
    seg = rng.integers(-1, 3, (5, 6, 7)).astype(np.int8)
    assert R.resample_labels(seg, (5, 6, 7)) is seg
    out = np.empty_like(data)
    R.resample_data(data, (5, 6, 7), 0, 3, 0, out=out)
    np.testing.assert_array_equal(out, data)


@pytest.mark.parametrize("shape", [(37, 45, 50), (11, 17, 13), (20, 45, 50), (33, 12, 70)])
def test_image_resampling_matches_skimage(shape):
    """Order 3 with edge mode and clipping: the numbers nnU-Net gets from skimage.transform.resize."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 20, 30, 25)).astype(np.float32)
    ours = R.resample_data(x, shape, None, 3, 0)[0]
    ref = resize(x[0].astype(np.float64), shape, order=3, mode="edge", anti_aliasing=False)
    assert ours.dtype == np.float32 and ours.shape == shape
    assert np.abs(ours - ref).max() < 1e-5


def test_separate_z_uses_nearest_along_the_coarse_axis():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 4, 10, 12)).astype(np.float32)
    out = R.resample_data(x, (8, 20, 24), 0, 3, 0)[0]
    inplane = [
        resize(x[0, k].astype(np.float64), (20, 24), order=3, mode="edge", anti_aliasing=False) for k in range(4)
    ]
    for k in range(8):  # output slice k is a copy of in-plane-resampled input slice k // 2
        assert np.abs(out[k] - inplane[k // 2]).max() < 1e-5
    joint = R.resample_data(x, (8, 20, 24), None, 3, 0)[0]
    assert np.abs(joint[1] - joint[0]).max() > 0.01  # a joint cubic resampling would blend slices instead


def test_nearest_index_upsample_then_downsample_is_exact():
    up = R.nearest_index(5, 10)
    assert up.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert up[R.nearest_index(10, 5)].tolist() == [0, 1, 2, 3, 4]


def test_labels_one_hot_linear():
    seg = np.zeros((1, 8, 8), dtype=np.int8)
    seg[0, 2:6, 2:6] = 2
    seg[0, 0, :] = -1
    up = R.resample_labels(seg, (1, 16, 16), 0, 1, 0)
    assert up.dtype == np.int8 and set(np.unique(up)) == {-1, 0, 2}
    assert (up == 2).sum() == 64  # a 4x4 square becomes 8x8
    back = R.resample_labels(up, (1, 8, 8), 0, 1, 0)
    np.testing.assert_array_equal(back, seg)


def test_labels_2x_inplane_round_trip_is_exact_for_any_labels():
    rng = np.random.default_rng(3)
    seg = rng.integers(-1, 4, (3, 9, 11)).astype(np.int16)
    up = R.resample_labels(seg, (6, 18, 22), 0, 1, 0)
    np.testing.assert_array_equal(R.resample_labels(up, seg.shape, 0, 1, 0), seg)


def test_probability_resampling_is_linear_and_keeps_the_sum():
    rng = np.random.default_rng(4)
    p = rng.random((3, 4, 6, 5)).astype(np.float32)
    p /= p.sum(0, keepdims=True)
    out = R.resample_probabilities(p, (7, 9, 11), None, 1, 0)
    assert out.shape == (3, 7, 9, 11) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)
    assert out.min() >= 0 and out.max() <= 1
