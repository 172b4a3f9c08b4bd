"""nnU-Net plans.json / dataset.json -> autoseg Plans: every mapped field, inheritance, and what is refused."""

from __future__ import annotations

import math

import pytest
from nnunet_folder import DATASET, INTENSITY, configuration, plans

from autoseg.errors import PlansError
from autoseg.planning.nnunet_plans import channels_from_nnunet, labels_from_nnunet, plans_from_nnunet


def test_configuration_fields_are_mapped():
    conf = configuration(patch=(16, 24, 16), spacing=(2.5, 0.8, 0.8), norm="CTNormalization")
    conf["use_mask_for_norm"] = [True]
    conf["resampling_fn_data_kwargs"]["order"] = 2
    raw = plans({"3d_fullres": conf}, transpose=(2, 0, 1))
    p = plans_from_nnunet(raw, "3d_fullres", "plans.json")
    c = p.configuration("3d_fullres")
    assert p.transpose == (2, 0, 1) and p.transpose_backward == (1, 2, 0)
    assert (c.spacing, c.patch_size, c.median_shape) == ((2.5, 0.8, 0.8), (16, 24, 16), (16, 24, 16))
    assert (c.normalization, c.use_mask_for_norm) == (("ct",), (True,))
    r = c.resampling
    assert (r.order_data, r.order_seg, r.order_probabilities, r.order_z, r.anisotropy_threshold) == (2, 1, 1, 0, 3.0)
    assert c.network.name == "unet" and c.network.params["features_per_stage"] == [4, 8, 16]
    stats = p.intensity[0]
    assert (stats.mean, stats.std, stats.percentile_00_5, stats.percentile_99_5) == (100.0, 60.0, -20.0, 400.0)


@pytest.mark.parametrize(
    "scheme, name",
    [("ZScoreNormalization", "zscore"), ("CTNormalization", "ct"), ("RescaleTo01Normalization", "rescale_to_0_1"),
     ("RGBTo01Normalization", "rgb_to_0_1"), ("NoNormalization", "none")],
)  # fmt: skip
def test_normalisation_schemes(scheme, name):
    p = plans_from_nnunet(plans({"2d": configuration(2, (16, 16), (1.0, 1.0), scheme)}), "2d", "p")
    assert p.configuration("2d").normalization == (name,)


def test_inherits_from_is_resolved_and_forced_no_separate_z_kept():
    child = {"inherits_from": "3d_fullres", "patch_size": [8, 8, 8], "data_identifier": "big"}
    base = configuration()
    for kind in ("data", "seg", "probabilities"):
        base[f"resampling_fn_{kind}_kwargs"]["force_separate_z"] = False
    p = plans_from_nnunet(plans({"3d_fullres": base, "3d_small": child}), "3d_small", "p")
    c = p.configuration("3d_small")
    assert (c.patch_size, c.data_identifier, c.spacing) == ((8, 8, 8), "big", (1.0, 1.0, 1.0))
    assert math.isinf(c.resampling.anisotropy_threshold)  # force_separate_z false: never a separate z


def test_intensity_from_the_fingerprint_when_the_plans_hold_none():
    raw = plans({"3d_fullres": configuration(norm="CTNormalization")})
    del raw["foreground_intensity_properties_per_channel"]
    assert plans_from_nnunet(raw, "3d_fullres", "p").intensity is None
    fp = {"foreground_intensity_properties_per_channel": {"0": dict(INTENSITY["0"], mean=7.0)}}
    assert plans_from_nnunet(raw, "3d_fullres", "p", fp).intensity[0].mean == 7.0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(resampling_fn_data="resample_torch_fornnunet"), "resampling_fn_data 'resample_torch_for"),
        (lambda c: c.update(previous_stage="3d_lowres"), "cascade stage"),
        (lambda c: c.update(normalization_schemes=["MyNorm"]), "normalization_schemes: 'MyNorm' not supported"),
        (lambda c: c["resampling_fn_seg_kwargs"].update(order_z=1), "differ in order_z"),
        (lambda c: c.pop("patch_size"), "field patch_size missing"),
        (
            lambda c: c.update(patch_size=[18, 16, 16]),
            r"/m/plans.json: configuration '3d_fullres': patch_size .* not div",
        ),
    ],
)
def test_what_autoseg_does_not_reproduce_is_refused(change, message):
    conf = configuration()
    change(conf)
    with pytest.raises(PlansError, match=message):
        plans_from_nnunet(plans({"3d_fullres": conf}), "3d_fullres", "/m/plans.json")


def test_bad_transpose_and_unknown_configuration():
    raw = plans({"3d_fullres": configuration()}, transpose=(1, 2, 0))
    raw["transpose_backward"] = [1, 2, 0]
    with pytest.raises(PlansError, match="not the inverse"):
        plans_from_nnunet(raw, "3d_fullres", "p")
    with pytest.raises(PlansError, match=r"no configuration '2d' \(available: 3d_fullres\)"):
        plans_from_nnunet(raw, "2d", "p")


def test_labels_drop_the_ignore_label_and_refuse_regions():
    ds = dict(DATASET, labels={"background": 0, "a": 1, "b": 2, "ignore": 3})
    assert labels_from_nnunet(ds, "d") == {"background": 0, "a": 1, "b": 2}
    assert channels_from_nnunet(ds, "d") == ("MRI",)
    regions = dict(DATASET, labels={"background": 0, "whole": [1, 2], "core": 2}, regions_class_order=[1, 2])
    with pytest.raises(PlansError, match="region-based labels \\(whole\\)"):
        labels_from_nnunet(regions, "d")
