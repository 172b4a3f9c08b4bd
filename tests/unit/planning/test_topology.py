"""The pure planning rules in autoseg.planning.topology, on hand-checked inputs."""

from __future__ import annotations

import numpy as np
import pytest

from autoseg.planning import topology as T


def test_anisotropy_rule_fires_and_takes_the_10th_percentile():
    # z 3.0..4.0 mm vs 0.625 in-plane, 20 slices vs 320: both conditions hold
    spacings = np.array([[3.0 + 0.1 * i, 0.625, 0.625] for i in range(11)])
    shapes = np.array([[20, 320, 320]] * 11)
    target, why = T.fullres_target_spacing(spacings, shapes)
    assert target[0] == pytest.approx(3.1)  # np.percentile(3.0..4.0, 10)
    assert list(target[1:]) == [0.625, 0.625]
    assert "z target 3.1 mm: 10th percentile" in why
    assert "median z spacing 3.5 > 3 x 0.625" in why and "20 slices x 3 < 320" in why


def test_anisotropy_rule_needs_few_slices_too():
    spacings = np.array([[3.0 + 0.1 * i, 0.625, 0.625] for i in range(11)])
    shapes = np.array([[200, 320, 320]] * 11)  # 200 slices x 3 >= 320: not anisotropic in voxels
    target, why = T.fullres_target_spacing(spacings, shapes)
    assert target[0] == pytest.approx(3.5)  # the median
    assert "median (anisotropy rule not applied" in why and "200 slices x 3 >= 320" in why


def test_anisotropy_rule_not_fired_for_moderate_spacing():
    spacings = np.array([[2.5, 1.0, 1.0], [2.0, 1.0, 1.0], [3.0, 1.0, 1.0]])
    target, _ = T.fullres_target_spacing(spacings, np.array([[10, 300, 300]] * 3))
    assert list(target) == [2.5, 1.0, 1.0]  # 2.5 <= 3 x 1.0


def test_anisotropy_10th_percentile_is_raised_above_the_finest_other_axis():
    spacings = np.array([[0.5, 1.0, 1.0]] * 2 + [[5.0, 1.0, 1.0]] * 9)  # 10th percentile 0.95 < 1.0
    target, why = T.fullres_target_spacing(spacings, np.array([[10, 300, 300]] * 11))
    assert target[0] == pytest.approx(1.0 + 1e-5)
    assert "raised to just above 1" in why


def test_transpose_puts_the_coarsest_axis_first():
    assert T.transpose_forward([0.7, 0.7, 4.0])[0] == (2, 0, 1)
    assert T.transpose_forward([3.0, 0.6, 0.6])[0] == (0, 1, 2)
    assert T.transpose_forward([1.0, 2.0, 1.0])[0] == (1, 0, 2)
    assert "coarsest axis (x, 4 mm)" in T.transpose_forward([0.7, 0.7, 4.0])[1]


def test_median_resampled_shape_rounds_per_case_then_takes_the_median():
    spacings = np.array([[2.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    shapes = np.array([[10, 20, 21], [30, 20, 20]])
    assert list(T.median_resampled_shape(spacings, shapes, [1.0, 1.0, 1.0])) == [25.0, 20.0, 20.5]
    assert T.resampled_shape([5, 5, 5], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]) == [2, 2, 2]  # 2.5 -> 2 (half to even)


def test_initial_patch_follows_the_aspect_ratio_and_is_clipped():
    patch = T.initial_patch_size([2.0, 1.0, 1.0], [1000, 1000, 1000])
    assert list(patch) == [161, 323, 323]  # 1/spacing scaled: x * 2x * 2x = 256^3 -> x = 161.3
    assert list(T.initial_patch_size([1.0, 1.0, 1.0], [40, 300, 300])) == [40, 256, 256]
    assert list(T.initial_patch_size([1.0, 1.0], [5000, 100])) == [2048, 100]


def test_pool_schedule_for_an_anisotropic_patch():
    # prostate-like: z 3.256 mm, 0.625 in-plane, patch 20 x 320 x 256 (nnU-Net's 3d_fullres answer)
    topo = T.pool_schedule([3.256, 0.625, 0.625], [20, 320, 256])
    assert topo.strides == ((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2))
    assert topo.kernel_sizes[:3] == ((1, 3, 3), (1, 3, 3), (3, 3, 3))
    assert topo.kernel_sizes[-1] == (3, 3, 3) and topo.n_stages == 7
    assert topo.pools_per_axis == (2, 6, 6) and topo.divisor == (4, 64, 64)
    assert topo.patch_size == (20, 320, 256)


def test_pool_schedule_min_edge_and_single_axis_rule():
    # 2D 8 x 100: y can pool once (8 -> 4); x alone needs >= 12 to pool: 100 -> 50 -> 25 -> 13 -> 7 stops
    topo = T.pool_schedule([1.0, 1.0], [8, 100])
    assert topo.pools_per_axis == (1, 4)
    assert topo.patch_size == (8, 112)  # padded to multiples of 2 x 16
    assert T.pool_schedule([1.0, 1.0, 1.0], [7, 7, 7]).n_stages == 1  # nothing to pool


def test_pad_to_divisible():
    assert T.pad_to_divisible([321.5, 64, 1], [64, 64, 4]) == (384, 64, 4)


def test_features_double_and_cap():
    assert T.features_per_stage(7, 32, 320) == [32, 64, 128, 256, 320, 320, 320]
    assert T.features_per_stage(8, 32, 512) == [32, 64, 128, 256, 512, 512, 512, 512]


def test_shrink_reduces_the_axis_largest_relative_to_the_median():
    topo = T.pool_schedule([1.0, 1.0, 1.0], [256, 256, 256])
    median = [300.0, 600.0, 600.0]
    shrunk, steps = T.shrink_patch([1.0] * 3, median, topo, lambda t: t.patch_size[0] > 224)
    assert steps == 1 and shrunk.patch_size == (224, 256, 256)  # 256 -> 224, not 192
    assert T.axis_to_shrink([64, 64, 64], [100, 100, 100]) == 2  # ties: the last axis


def test_batch_size_memory_cap_and_minimum():
    assert T.batch_size(560e6, 100e6, 2, 1e12, [128] * 3)[0] == 11  # round(5.6 * 2)
    bs, why = T.batch_size(560e6, 100e6, 2, 20 * 128**3, [128] * 3)  # 5 % of 20 patches = 1 -> minimum 2
    assert bs == 2 and "5 % dataset cap 1" in why and "raised to the minimum 2" in why
    assert T.batch_size(560e6, 100e6, 2, 20 * 128**3, [128] * 3, max_covered=1.0)[0] == 11  # ResEnc: no cap


def test_normalization_and_use_mask_for_norm():
    schemes, masks, why = T.normalization_schemes(["CT", "noNorm", "T2", "rescale_to_0_1", "zscore"], 0.5)
    assert schemes == ("ct", "none", "zscore", "rescale_to_0_1", "zscore")
    assert masks == (False, False, True, False, True)  # only z-score, and only when cropping removed > 25 %
    assert "0.5 < 0.75" in why[2]
    assert T.normalization_schemes(["T1", "RGB_to_0_1"], 0.8)[:2] == (("zscore", "rgb_to_0_1"), (False, False))
    assert T.normalization_schemes(["MRI"], 0.75)[1] == (False,)  # not strictly below 3/4
