"""DefaultPlanner on small hand-made fingerprints: configurations, presets, budget scaling, explanations, save/load."""

from __future__ import annotations

import math

import pytest

from autoseg.errors import ConfigError
from autoseg.fingerprint.fingerprint import SCHEMA_VERSION, CaseFingerprint, DatasetFingerprint, IntensityStats
from autoseg.planning.planner import DefaultPlanner, plan_dataset, planners
from autoseg.planning.plans import Plans


def make_fp(spacing, shape, n=20, channels=("MRI",), labels=3, rel=1.0) -> DatasetFingerprint:
    stats = IntensityStats(100.0, 100.0, 10.0, 0.0, 200.0, 1.0, 199.0)
    cases = tuple(
        CaseFingerprint(f"c{i}", tuple(spacing), tuple(shape[:1]) + tuple(s + (i % 3) for s in shape[1:]))
        for i in range(n)
    )
    return DatasetFingerprint(
        schema_version=SCHEMA_VERSION,
        dataset="Dataset900_Test",
        channel_names=tuple(channels),
        labels={"background": 0, **{f"l{i}": i for i in range(1, labels)}},
        num_training=n,
        file_ending=".nii.gz",
        cases=cases,
        intensity=tuple(stats for _ in channels),
        median_relative_size_after_cropping=rel,
    )


def test_small_isotropic_dataset_has_2d_and_3d_fullres_only():
    plans, why = plan_dataset(make_fp((1.0, 1.0, 1.0), (36, 50, 35), n=260, labels=3))
    assert plans.names() == ["2d", "3d_fullres"]
    full = plans.configuration("3d_fullres")
    assert full.patch_size == (40, 56, 40) and full.median_shape == (36, 51, 36)
    assert full.batch_size == 10  # memory allows 58, the 5 % cap: round(260 * 36*51*36 * 0.05 / (40*56*40)) = 10
    assert full.network.name == "unet" and full.network.params["n_conv_per_stage"] == [2, 2, 2, 2]
    assert full.batch_dice is False and plans.configuration("2d").batch_dice is True
    assert any("no 3d_lowres: the 3d_fullres patch covers" in w for w in why)
    assert plans.planner == "default" and plans.gpu_memory_gb == 8.0


def test_large_ct_gets_lowres_and_cascade():
    plans, why = plan_dataset(make_fp((1.0, 0.77, 0.77), (480, 512, 512), n=100, channels=("CT",)))
    assert plans.names() == ["2d", "3d_lowres", "3d_fullres", "3d_cascade_fullres"]
    low, full, casc = (plans.configuration(n) for n in ("3d_lowres", "3d_fullres", "3d_cascade_fullres"))
    assert low.next_stage == "3d_cascade_fullres" and casc.previous_stage == "3d_lowres"
    assert casc.data_identifier == full.data_identifier == "3d_fullres" and low.data_identifier == "3d_lowres"
    assert (low.batch_dice, full.batch_dice, casc.batch_dice) == (False, True, True)
    assert all(a > b for a, b in zip(low.spacing, full.spacing))
    assert full.normalization == ("ct",) and full.use_mask_for_norm == (False,)
    assert plans.intensity[0].percentile_99_5 == 199.0  # the CT normaliser's statistics travel with the plans
    assert any(w.startswith("3d_lowres: the 3d_fullres patch covers < 25 %") and "kept" in w for w in why)


def test_2d_data_gets_only_2d():
    plans, _ = plan_dataset(make_fp((999.0, 1.0, 1.0), (1, 512, 512), n=40))
    assert plans.names() == ["2d"] and plans.transpose == (0, 1, 2)
    assert plans.configuration("2d").spacing == (1.0, 1.0)


def test_coarse_last_axis_is_transposed_first():
    plans, why = plan_dataset(make_fp((0.7, 0.7, 4.0), (400, 400, 30), n=40))
    assert plans.transpose == (2, 0, 1) and plans.transpose_backward == (1, 2, 0)
    full = plans.configuration("3d_fullres")
    assert full.spacing[0] == pytest.approx(4.0) and full.spacing[1:] == pytest.approx((0.7, 0.7))
    assert full.network.params["kernel_sizes"][0] == [1, 3, 3]
    assert any("axis order (x, z, y)" in w for w in why)


def test_resenc_presets_and_budget_scaling():
    fp = make_fp((1.0, 1.0, 1.0), (36, 50, 35), n=260)
    m, _ = plan_dataset(fp, preset="resenc-m")
    full = m.configuration("3d_fullres")
    assert full.network.name == "resenc_unet" and m.planner == "resenc-m" and m.gpu_memory_gb == 8.0
    assert full.network.params["n_conv_per_stage"] == [1, 3, 4, 6]
    assert full.network.params["n_conv_per_stage_decoder"] == [1, 1, 1]
    assert full.batch_size == 58  # ResEnc presets drop the 5 % cap (the default planner gives 10 here)
    big = plan_dataset(make_fp((1.0, 0.8, 0.8), (200, 400, 400), n=100), preset="resenc-l")[0]
    assert big.gpu_memory_gb == 24.0
    base = plan_dataset(make_fp((1.0, 0.8, 0.8), (200, 400, 400), n=100), preset="resenc-m")[0]
    vol = [math.prod(p.configuration("3d_fullres").patch_size) for p in (base, big)]
    assert vol[1] > vol[0]  # 24 GB buys a larger patch than 8 GB


def test_gpu_memory_scales_the_reference():
    fp = make_fp((1.0, 1.0, 1.0), (36, 50, 35), n=20000)  # enough data that the 5 % cap does not bind
    bs8 = plan_dataset(fp)[0].configuration("3d_fullres").batch_size
    bs16 = plan_dataset(fp, gpu_memory_gb=16)[0].configuration("3d_fullres").batch_size
    assert bs16 == pytest.approx(2 * bs8, abs=1)


def test_use_mask_for_norm_follows_cropping():
    plans, _ = plan_dataset(make_fp((1.0, 1.0, 1.0), (100, 120, 120), channels=("T1", "noNorm"), rel=0.5))
    c = plans.configuration("3d_fullres")
    assert c.normalization == ("zscore", "none") and c.use_mask_for_norm == (True, False)


def test_lowres_of_named_plans_gets_its_own_data_identifier():
    plans, _ = plan_dataset(make_fp((1.0, 0.77, 0.77), (480, 512, 512), n=100), preset="resenc-m", plans_name="m")
    assert plans.configuration("3d_lowres").data_identifier == "3d_lowres_m"
    assert plans.configuration("3d_fullres").data_identifier == "3d_fullres"  # shared with the default plans


def test_unknown_preset_planner_and_bad_budget():
    fp = make_fp((1.0, 1.0, 1.0), (36, 50, 35))
    with pytest.raises(ConfigError, match="unknown planner preset 'resenc-s'; known: resenc-m, resenc-l"):
        DefaultPlanner().plan(fp, preset="resenc-s")
    with pytest.raises(ConfigError, match="unknown planner 'defualt'.*Did you mean 'default'"):
        plan_dataset(fp, planner="defualt")
    with pytest.raises(ConfigError, match="--gpu-memory must be positive"):
        plan_dataset(fp, gpu_memory_gb=0)
    assert "default" in planners


def test_plans_roundtrip_through_json(tmp_path):
    plans, _ = plan_dataset(make_fp((1.0, 0.77, 0.77), (480, 512, 512), n=100, channels=("CT",)))
    path = plans.save(tmp_path / "plans.json")
    assert Plans.load(path) == plans
