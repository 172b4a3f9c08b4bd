from __future__ import annotations

import numpy as np
import pytest

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_image, read_label, write_image, write_label
from autoseg.data.synthetic import oblique_direction
from autoseg.inference.export import restore_labels, restore_probabilities, write_segmentation
from autoseg.preprocessing import preprocess as P


def _case(rng, shape, box, n_labels=3):
    img = np.zeros((1, *shape), np.float32)
    lab = np.zeros(shape, np.uint8)
    crop = tuple(slice(a, b) for a, b in box)
    img[(0, *crop)] = rng.uniform(1, 100, [b - a for a, b in box])
    lab[crop] = rng.integers(0, n_labels, [b - a for a, b in box])  # harsh: independent noise labels
    return img, lab


def _write_read(tmp_path, img, lab, geo, ending):
    write_image(tmp_path / f"img{ending}", img[0], geo)
    write_label(tmp_path / f"lab{ending}", lab, geo)
    img2, geo2 = read_image([tmp_path / f"img{ending}"])
    lab2, _ = read_label(tmp_path / f"lab{ending}")
    return img2, lab2, geo2


def test_label_round_trip_3d_oblique_anisotropic(tmp_path, make_plans):
    rng = np.random.default_rng(0)
    img, lab = _case(rng, (14, 18, 6), ((2, 12), (3, 16), (1, 5)))
    geo = Geometry((0.8, 0.9, 4.0), (3.0, -7.5, 12.25), oblique_direction(0.4), 3)
    img, lab, geo = _write_read(tmp_path, img, lab, geo, ".nii.gz")
    # coarse x axis first (transpose), resampled 2x finer on every axis; separate z (4.0 / 0.8 > 3)
    plans = make_plans(spacing=(2.0, 0.4, 0.45), transpose=(2, 0, 1))
    cfg = plans.configuration("3d_fullres")
    pre = P.preprocess_case(img, lab, geo, plans, cfg, case_id="c0")
    props = pre.properties
    assert props.bbox == ((2, 12), (3, 16), (1, 5)) and props.shape_before_crop == (14, 18, 6)
    assert props.shape_after_crop == (4, 10, 13) and props.spacing == pytest.approx((4.0, 0.8, 0.9))
    assert pre.data.shape == (1, 8, 20, 26) and pre.seg.shape == (1, 8, 20, 26)
    restored = restore_labels(pre.seg, props, cfg)
    np.testing.assert_array_equal(restored, lab)
    out = write_segmentation(tmp_path / "pred.nii.gz", restored, props.geometry)
    back, back_geo = read_label(out)
    np.testing.assert_array_equal(back, lab)
    assert back_geo.matches(geo) == []


def test_label_round_trip_2d(tmp_path, make_plans):
    rng = np.random.default_rng(1)
    img, lab = _case(rng, (1, 20, 24), ((0, 1), (2, 18), (3, 22)))
    geo = Geometry.identity((1.0, 1.0), dim=2)
    img, lab, geo = _write_read(tmp_path, img.astype(np.uint8), lab, geo, ".png")
    plans = make_plans(spacing=None, two_d_spacing=(0.5, 0.5))
    cfg = plans.configuration("2d")
    pre = P.preprocess_case(img, lab, geo, plans, cfg, case_id="c1")
    assert pre.data.shape == (1, 1, 32, 38) and pre.properties.target_spacing == (999.0, 0.5, 0.5)
    restored = restore_labels(pre.seg, pre.properties, cfg)
    np.testing.assert_array_equal(restored, lab)
    back, _ = read_label(write_segmentation(tmp_path / "pred.png", restored, pre.properties.geometry))
    np.testing.assert_array_equal(back, lab)


def test_restore_probabilities_background_outside_and_argmax(make_plans):
    rng = np.random.default_rng(2)
    img, lab = _case(rng, (10, 12, 14), ((1, 9), (2, 11), (3, 12)))
    plans = make_plans(spacing=(0.5, 0.5, 0.5))  # isotropic 2x: no separate z
    cfg = plans.configuration("3d_fullres")
    pre = P.preprocess_case(img, lab, Geometry.identity(), plans, cfg)
    seg = np.maximum(pre.seg[0], 0)
    probs = np.stack([(seg == k) for k in range(3)]).astype(np.float32)
    raw = restore_probabilities(probs, pre.properties, cfg)
    assert raw.shape == (3, 10, 12, 14) and raw.dtype == np.float32
    np.testing.assert_allclose(raw.sum(0), 1.0, atol=1e-5)
    assert np.all(raw[0, 0] == 1) and np.all(raw[1:, 0] == 0)  # outside the crop box: background
    agree = (np.argmax(raw, 0) == lab).mean()
    assert agree > 0.9  # noise labels, trilinear round trip; exact labels come from restore_labels


def test_2d_configuration_keeps_out_of_plane_spacing(make_plans):
    plans = make_plans(spacing=(1.0, 1.0, 1.0), two_d_spacing=(0.5, 0.75))
    cfg = plans.configuration("2d")
    assert P.target_spacing(cfg, (3.0, 1.0, 1.5)) == (3.0, 0.5, 0.75)
    rng = np.random.default_rng(3)
    img, lab = _case(rng, (5, 8, 9), ((0, 5), (0, 8), (0, 9)))
    geo = Geometry.identity((3.0, 1.0, 1.5))
    pre = P.preprocess_case(img, lab, geo, plans, cfg)
    assert pre.data.shape == (1, 5, 16, 18)


@pytest.mark.parametrize(
    "case_spacing, target, expected_axis",
    [
        ((4.0, 1.0, 1.0), (1.0, 1.0, 1.0), 0),
        ((1.0, 1.0, 1.0), (2.9, 1.0, 1.0), None),
        ((1.0, 1.0, 1.0), (3.5, 1.0, 1.0), 0),
        ((1.0, 2.0, 2.0), (0.5, 0.5, 0.5), None),
        ((0.5, 2.0, 2.0), (1.0, 1.0, 1.0), None),  # tie of the two coarse axes
    ],
)
def test_preprocess_uses_separate_z_exactly_when_the_rule_says(
    monkeypatch, make_plans, case_spacing, target, expected_axis
):
    seen = []
    real = P.resample_data

    def spy(data, shape, axis=None, order=3, order_z=0, out=None):
        seen.append((axis, order, order_z))
        return real(data, shape, axis, order, order_z, out)

    monkeypatch.setattr(P, "resample_data", spy)
    rng = np.random.default_rng(4)
    img, lab = _case(rng, (6, 8, 8), ((0, 6), (0, 8), (0, 8)))
    plans = make_plans(spacing=target)
    P.preprocess_case(img, lab, Geometry.identity(case_spacing), plans, plans.configuration("3d_fullres"))
    assert seen == [(expected_axis, 3, 0)]


def test_class_locations_count_seed_and_position():
    assert P.n_locations(5) == 5 and P.n_locations(20_000) == 10_000 and P.n_locations(2_000_000) == 20_000
    seg = np.zeros((30, 40, 50), np.int8)
    seg[:, :, :20] = 1  # 24000 voxels -> 10000 samples
    seg[0, 0, 49] = 3
    seg[5, 5, 45] = -1
    a = P.sample_class_locations(seg, "case_1")
    b = P.sample_class_locations(seg, "case_1")
    assert sorted(a) == [1, 3] and a[1].shape == (10_000, 3) and a[3].tolist() == [[0, 0, 49]]
    assert len({tuple(r) for r in a[1]}) == 10_000  # without replacement
    assert np.all(seg[tuple(a[1].T)] == 1)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], P.sample_class_locations(seg, "case_2")[1])


def test_test_image_without_labels(make_plans):
    img = np.zeros((1, 6, 6, 6), np.float32)
    img[0, 1:5, 1:5, 1:5] = 7.0
    plans = make_plans(spacing=(1.0, 1.0, 1.0))
    pre = P.preprocess_case(img, None, Geometry.identity(), plans, plans.configuration("3d_fullres"))
    assert pre.seg.shape == (1, 4, 4, 4) and np.all(pre.seg == 0) and pre.class_locations == {}
