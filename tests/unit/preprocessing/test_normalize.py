from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from autoseg.data.crop import crop_to_nonzero
from autoseg.data.dataset import list_cases, load_dataset
from autoseg.data.image_io import read_image, read_label
from autoseg.errors import ConfigError
from autoseg.fingerprint.extract import extract_fingerprint
from autoseg.fingerprint.fingerprint import IntensityStats
from autoseg.preprocessing import normalize as N
from autoseg.preprocessing.preprocess import preprocess_case

STATS = IntensityStats(mean=10.0, median=9.0, std=4.0, min=-50.0, max=90.0, percentile_00_5=0.0, percentile_99_5=20.0)


def test_ct_clips_to_fingerprint_percentiles_then_standardises():
    x = np.array([[[-100.0, 0.0, 10.0, 14.0, 20.0, 500.0]]], dtype=np.float32)
    out = N.normalizers.get("ct")(x, None, False, STATS)
    np.testing.assert_allclose(out.ravel(), [-2.5, -2.5, 0.0, 1.0, 2.5, 2.5])
    assert out.dtype == np.float32


def test_ct_without_statistics_is_a_clear_error():
    with pytest.raises(ConfigError, match="intensity statistics"):
        N.normalizers.get("ct")(np.zeros((1, 2, 2), np.float32), None, False, None)


def test_zscore_whole_image_and_masked():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, (4, 8, 8)).astype(np.float32)
    out = N.normalizers.get("zscore")(x, None, False, None)
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-4
    seg = np.zeros(x.shape, np.int8)
    seg[:, :2] = -1  # outside the nonzero mask
    x[:, :2] = 0
    out = N.normalizers.get("zscore")(x, seg, True, None)
    inside = out[seg >= 0]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-4
    assert np.all(out[seg < 0] == 0)


def test_other_schemes_and_aliases():
    x = np.array([[[2.0, 4.0, 6.0]]], dtype=np.float32)
    np.testing.assert_allclose(N.normalizers.get("rescale_to_0_1")(x, None, False, None).ravel(), [0, 0.5, 1])
    np.testing.assert_allclose(
        N.normalizers.get("rgb_to_0_1")(x, None, False, None).ravel(), [2 / 255, 4 / 255, 6 / 255]
    )
    np.testing.assert_array_equal(N.normalizers.get("none")(x, None, False, None), x)
    assert N.resolve_scheme("CTNormalization") == "ct"
    assert N.resolve_scheme("noNorm") == "none"
    assert N.resolve_scheme("ZScoreNormalization") == "zscore"
    with pytest.raises(ConfigError, match="unknown normalization scheme 'fancy'"):
        N.resolve_scheme("fancy")
    with pytest.raises(ConfigError, match="0..255"):
        N.normalizers.get("rgb_to_0_1")(x * 100, None, False, None)


def test_crop_marks_outside_and_makes_mask_seg_for_test_images():
    img = np.zeros((2, 6, 7, 8), np.float32)
    img[0, 1:5, 2:6, 3:7] = 1.0
    img[1, 2, 6, 7] = 3.0  # second channel widens the box
    seg = np.zeros((6, 7, 8), np.uint8)
    seg[2, 3, 4] = 2
    cropped, s, box = crop_to_nonzero(img, seg)
    assert box == ((1, 5), (2, 7), (3, 8))
    assert cropped.shape == (2, 4, 5, 5) and s.shape == (4, 5, 5) and s.dtype == np.int8
    assert s[1, 1, 1] == 2 and s[0, 0, 0] == 0 and s[0, 4, 0] == -1
    _, m, _ = crop_to_nonzero(img, None)
    assert set(np.unique(m)) == {-1, 0} and (m == 0).sum() == 4 * 4 * 4 + 1


def test_ct_normalisation_statistics_match_the_fingerprint(synthetic, make_plans):
    """Normalised foreground of all cases has the fingerprint's mean 0 / std 1 (up to the clipping)."""
    folder = synthetic(n_cases=4, shape=(12, 20, 20), spacing=(1.0, 1.0, 1.0), ct=True, oblique_every=0)
    spec = load_dataset(folder)
    fp, _ = extract_fingerprint(spec, jobs=1, sample_budget=10**6)
    st = fp.intensity[0]
    plans = make_plans(spacing=(1.0, 1.0, 1.0), normalization=("ct",))
    cases, _ = list_cases(spec)
    fg_values, raw_fg = [], []
    for case in cases:
        img, geo = read_image(case.images)
        lab, _ = read_label(case.label)
        cfg = replace(plans.configuration("3d_fullres"), spacing=geo.spacing)  # no resampling
        pre = preprocess_case(img, lab, geo, plans, cfg, fingerprint=fp, case_id=case.case_id)
        mask = pre.seg[0] > 0
        fg_values.append(pre.data[0][mask])
        raw_fg.append(img[0][lab > 0])
        # exactly the CT formula with the fingerprint's numbers (spacing unchanged: no resampling)
        _, _, box = crop_to_nonzero(img, lab)
        crop = img[0][tuple(slice(a, b) for a, b in box)]
        expected = (np.clip(crop, st.percentile_00_5, st.percentile_99_5) - st.mean) / st.std
        np.testing.assert_allclose(pre.data[0], expected, rtol=1e-5, atol=1e-5)
    values = np.concatenate(fg_values)
    raw = np.concatenate(raw_fg)
    assert abs(raw.mean() - st.mean) < 0.01 * raw.std() and abs(raw.std() - st.std) < 0.01 * raw.std()
    assert abs(values.mean()) < 0.02 and abs(values.std() - 1.0) < 0.03
