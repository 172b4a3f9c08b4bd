"""The 3d_cascade_fullres stage: previous-stage maps, extra one-hot inputs, training, validation and prediction."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from autoseg.data.image_io import read_file, read_label
from autoseg.errors import ConfigError
from autoseg.fingerprint.extract import fingerprint_dataset
from autoseg.planning.plans import SCHEMA_VERSION, Configuration, NetworkSpec, Plans
from autoseg.preprocessing.cascade import convert_case
from autoseg.preprocessing.preprocess import preprocess_dataset
from autoseg.preprocessing.storage import list_cases, load_case
from autoseg.training import cascade
from autoseg.training.augment import PrevStageToData
from autoseg.training.checkpoint import load_checkpoint
from autoseg.training.config import TrainConfig
from autoseg.training.context import fold_context
from autoseg.training.loader import make_loaders
from autoseg.training.run import cascade_ready, default_configurations, train_folds
from autoseg.training.trainer import train_fold
from autoseg.workspace import Workspace

NAME = "Dataset999_Synthetic"
QUICK = {"epochs": 1, "iterations_per_epoch": 2, "val_iterations_per_epoch": 1, "val_tta": False}
LABELS = (1, 2)


def _conf(name, ident, spacing, patch, **kw) -> Configuration:
    params = {
        "n_stages": 3,
        "features_per_stage": [4, 8, 8],
        "kernel_sizes": [[3, 3, 3]] * 3,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [1, 1, 1],
        "n_conv_per_stage_decoder": [1, 1],
        "conv_bias": True,
        "norm": "instance",
        "nonlin": "leaky_relu",
    }
    return Configuration(
        name, ident, spacing, patch, (12, 12, 12), 2, False, ("zscore",), (False,), NetworkSpec("unet", params), **kw
    )


def cascade_plans() -> Plans:
    confs = (
        _conf("3d_fullres", "3d_fullres", (2.0, 1.0, 1.0), (8, 16, 16)),
        _conf("3d_lowres", "3d_lowres", (4.0, 2.0, 2.0), (8, 8, 8), next_stage="3d_cascade_fullres"),
        _conf("3d_cascade_fullres", "3d_fullres", (2.0, 1.0, 1.0), (8, 16, 16), previous_stage="3d_lowres"),
    )
    return Plans(SCHEMA_VERSION, "default", NAME, "test", (0, 1, 2), (2.5, 0.8, 0.8), (10, 16, 16), 8.0, confs)


@pytest.fixture(scope="module")
def no_plot():
    """progress.png costs seconds per fold on a busy machine and is not what these tests check."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("autoseg.training.progress.plot_png", lambda recs, labels: b"")
        yield


@pytest.fixture(scope="module")
def lowres(tmp_path_factory, no_plot):
    """Planned and preprocessed synthetic dataset with 3d_lowres trained (1 epoch) on folds 0..4."""
    from autoseg.data.synthetic import make_synthetic_dataset

    ws = Workspace.at(tmp_path_factory.mktemp("cascade") / "ws")
    make_synthetic_dataset(ws.raw, n_cases=6, shape=(10, 16, 16), ct=False, oblique_every=2, n_test=1)
    fingerprint_dataset(ws, NAME, jobs=1)
    plans = cascade_plans()
    plans.save(ws.plans_file(NAME))
    preprocess_dataset(ws, NAME, plans, jobs=1)
    results = train_folds(ws, NAME, ["3d_lowres"], range(5), overrides=QUICK, device="cpu", num_workers=0)
    assert [r.fold for r in results] == [0, 1, 2, 3, 4]
    return ws, plans


@pytest.fixture(scope="module")
def cascade_fold0(lowres):
    ws, plans = lowres
    (result,) = train_folds(ws, NAME, ["3d_cascade_fullres"], [0], overrides=QUICK, device="cpu", num_workers=0)
    return ws, plans, result


def test_default_configurations_put_the_cascade_after_its_previous_stage():
    plans = cascade_plans()
    assert default_configurations(plans) == ["3d_fullres", "3d_lowres", "3d_cascade_fullres"]
    reordered = Plans(**{**plans.__dict__, "configurations": plans.configurations[::-1]})
    assert default_configurations(reordered) == ["3d_lowres", "3d_cascade_fullres", "3d_fullres"]


def test_prev_stage_maps_are_the_lowres_predictions_in_the_fullres_grid(cascade_fold0):
    ws, plans, _ = cascade_fold0
    folder = cascade.prev_stage_folder(ws, NAME, plans.configuration("3d_cascade_fullres"))
    assert folder == ws.preprocessed_dataset(NAME) / "3d_cascade_fullres_prev_stage"
    data = ws.preprocessed_config(NAME, "3d_fullres")
    cases = list_cases(data)
    assert sorted(p.stem for p in folder.glob("*.npy")) == cases and len(cases) == 6
    splits = __import__("json").loads(ws.splits_file(NAME).read_text())
    fold_of = {c: k for k, s in enumerate(splits) for c in s["val"]}
    for cid in cases:
        prev = np.load(folder / f"{cid}.npy")
        stored = load_case(data, cid, mmap=True, with_locations=False)
        assert prev.dtype == np.uint8 and prev.shape == stored.seg.shape[1:]
        run = ws.run_dir(NAME, "default", "3d_lowres", "default", fold_of[cid])
        pred, _ = read_label(run / "validation" / f"{cid}.nii.gz")
        assert set(np.unique(prev)) <= set(np.unique(pred)) | {0}
        # the same preprocessing as the training labels: a map of the ground truth reproduces the stored seg
        gt, _ = read_label(ws.gt_folder(NAME) / f"{cid}.nii.gz")
        image, geo = read_file(ws.raw_dataset(NAME) / "imagesTr" / f"{cid}_0000.nii.gz")
        _, from_gt = convert_case(image, gt, geo, plans, plans.configuration("3d_cascade_fullres"), None)
        np.testing.assert_array_equal(from_gt, np.maximum(stored.seg[0], 0))


def test_prev_stage_build_skips_done_cases_and_redoes_stale_ones(cascade_fold0):
    import os

    ws, plans, _ = cascade_fold0
    conf = plans.configuration("3d_cascade_fullres")
    folder = cascade.prev_stage_folder(ws, NAME, conf)
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")}
    assert cascade.build_prev_stage(ws, NAME, plans, conf, "default", "default") == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")} == before
    expected = np.load(folder / "case_002.npy")
    (folder / "case_000.npy").unlink()
    os.utime(folder / "case_002.npy", ns=(0, 0))  # older than its prediction
    cascade.build_prev_stage(ws, NAME, plans, conf, "default", "default")
    after = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")}
    assert sorted(after) == sorted(before) and after["case_002.npy"] > 0
    assert all(after[n] == before[n] for n in before if n not in ("case_000.npy", "case_002.npy"))
    np.testing.assert_array_equal(np.load(folder / "case_002.npy"), expected)
    assert not list(folder.glob(".*.tmp"))


def test_cascade_network_and_batches_have_the_extra_channels(cascade_fold0):
    ws, plans, result = cascade_fold0
    weights = load_checkpoint(result.final_checkpoint)["model"]
    first_conv = next(w for w in weights.values() if w.ndim == 5)
    assert first_conv.shape[1] == 1 + len(LABELS)
    assert (result.run_dir / "validation" / "summary.json").is_file()
    fc = fold_context(ws, NAME, plans, "3d_cascade_fullres", 0, "default")
    assert fc.in_channels == 3 and fc.prev_stage_folder is not None
    train, val = make_loaders(
        fc.data_folder, fc.train_ids, fc.val_ids, fc.configuration, num_workers=0, seed=3,
        prev_stage=fc.prev_stage_folder, prev_stage_labels=fc.foreground_labels,
    )  # fmt: skip
    with train, val:
        for batch in (next(train), next(val)):
            data = batch.data.numpy()
            assert data.shape == (2, 3, 8, 16, 16) and batch.target[0].shape == (2, 1, 8, 16, 16)
            extra = data[:, 1:]
            assert set(np.unique(extra)) <= {0.0, 1.0} and extra.sum(1).max() <= 1.0
            assert extra.sum() > 0 and int(batch.target[0].max()) <= 2


def test_prev_stage_transform_is_exact_without_degradation_and_degrades_with_it():
    rng = np.random.default_rng(0)
    prev = rng.integers(0, 3, (2, 8, 8, 8)).astype(np.int16)
    label = rng.integers(0, 3, (2, 8, 8, 8)).astype(np.int16)
    seg = np.stack([label, prev], 1)
    data = rng.normal(size=(2, 1, 8, 8, 8)).astype(np.float32)
    out = PrevStageToData(LABELS, 0.0, 0.0)(data=data.copy(), seg=seg.copy())
    assert out["data"].shape == (2, 3, 8, 8, 8) and out["data"].dtype == np.float32
    np.testing.assert_array_equal(out["data"][:, 0], data[:, 0])
    np.testing.assert_array_equal(out["data"][:, 1], (prev == 1).astype(np.float32))
    np.testing.assert_array_equal(out["data"][:, 2], (prev == 2).astype(np.float32))
    np.testing.assert_array_equal(out["seg"], label[:, None])
    np.random.seed(1)
    hot = PrevStageToData(LABELS, 1.0, 1.0)(data=data.copy(), seg=seg.copy())["data"][:, 1:]
    assert set(np.unique(hot)) <= {0.0, 1.0} and hot.sum(1).max() <= 1.0
    assert not np.array_equal(hot, out["data"][:, 1:])


def test_missing_lowres_fold_is_an_error_or_a_skip(cascade_fold0, autoseg_log):
    ws, plans, _ = cascade_fold0
    val = ws.run_dir(NAME, "default", "3d_lowres", "default", 4) / "validation"
    moved = sorted(val.glob("*.nii.gz"))
    for p in moved:
        p.rename(p.with_suffix(".bak"))
    try:
        with pytest.raises(ConfigError) as err:
            train_fold(ws, NAME, plans, "3d_cascade_fullres", 1, TrainConfig(), device="cpu", num_workers=0)
        text = str(err.value)
        assert "'3d_cascade_fullres' is a cascade stage" in text and str(moved[0]) in text
        assert "autoseg train -d Dataset999_Synthetic -c 3d_lowres -f 0..4" in text
        assert not cascade_ready(ws, NAME, plans, "3d_cascade_fullres", "default")
        expected = "3d_cascade_fullres skipped: 1 cross-validation prediction(s) of 3d_lowres are missing"
        assert expected in autoseg_log.text
    finally:
        for p in moved:
            p.with_suffix(".bak").rename(p)
    assert cascade_ready(ws, NAME, plans, "3d_cascade_fullres", "default")


def test_predict_cascade_keeps_the_input_geometry(cascade_fold0, tmp_path):
    from autoseg.inference.predictor import Predictor, run_predict

    ws, _, _ = cascade_fold0
    inp = ws.raw_dataset(NAME) / "imagesTs"
    (written,) = run_predict(
        ws, inp, tmp_path / "out", dataset=999, configuration="3d_cascade_fullres", folds=[0], tta=False, device="cpu"
    )
    img, geo_in = read_file(inp / "case_006_0000.nii.gz")
    seg, geo_out = read_file(written)
    assert written.name == "case_006.nii.gz" and seg.shape == img.shape
    assert geo_out.spacing == geo_in.spacing and geo_out.origin == geo_in.origin
    np.testing.assert_allclose(geo_out.direction, geo_in.direction, rtol=0, atol=1e-6)
    assert set(np.unique(seg)) <= {0, 1, 2}
    from autoseg.inference.source import resolve_source

    pred = Predictor(resolve_source(ws, 999), "3d_cascade_fullres", [0], "cpu", tta=False)
    assert pred.in_channels == 1 and pred.network_in_channels == 3 and pred.previous.folds == (0, 1, 2, 3, 4)


def test_ensemble_of_lowres_and_cascade_runs_the_lowres_stage_once_per_case(cascade_fold0, tmp_path):
    from autoseg.inference.predictor import Predictor, predict_folder, share_previous_stages
    from autoseg.inference.source import resolve_source

    ws, _, _ = cascade_fold0
    inp = ws.raw_dataset(NAME) / "imagesTs"
    n_cases = len(list(inp.glob("*_0000.nii.gz")))
    source = resolve_source(ws, 999)
    outputs, calls = {}, {False: 0, True: 0}  # forward passes through lowres networks, without / with sharing
    for shared in (False, True):
        lowres = Predictor(source, "3d_lowres", None, "cpu", tta=False)
        cascade = Predictor(source, "3d_cascade_fullres", [0], "cpu", tta=False)
        for net in lowres.models + cascade.previous.models:
            net.register_forward_hook(lambda *_, k=shared: calls.__setitem__(k, calls[k] + 1))
        if shared:
            share_previous_stages([lowres, cascade])
            assert cascade.previous is lowres and lowres.memoize
        written = predict_folder([lowres, cascade], inp, tmp_path / str(shared))
        assert len(written) == n_cases
        outputs[shared] = [read_file(w)[0] for w in written]
    assert calls[False] == 2 * calls[True] and calls[True] >= 5 * n_cases  # 5 lowres folds, >= 1 tile per case
    for a, b in zip(outputs[False], outputs[True]):
        np.testing.assert_array_equal(a, b)


def test_select_treats_the_cascade_like_any_configuration(cascade_fold0):
    from autoseg.evaluation.select import select_model, trained_configurations

    ws, plans, _ = cascade_fold0
    train_folds(ws, NAME, ["3d_cascade_fullres"], [1, 2, 3, 4], overrides=QUICK, device="cpu", num_workers=0)
    assert trained_configurations(ws, NAME, plans, "default") == ["3d_lowres", "3d_cascade_fullres"]
    sel = select_model(ws, NAME)
    names = [c.name for c in sel.candidates]
    assert names[:2] == ["3d_lowres", "3d_cascade_fullres"] and "3d_lowres+3d_cascade_fullres" in names
    assert all(c.mean_dice is not None for c in sel.candidates)


def test_bundle_of_the_cascade_carries_its_previous_stage(cascade_fold0, tmp_path):
    from autoseg.bundle import export_bundle, install_bundle
    from autoseg.inference.predictor import run_predict

    ws, _, _ = cascade_fold0
    zip_path = export_bundle(ws, 999, tmp_path / "model.zip", configurations=["3d_cascade_fullres"])
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    assert any("3d_lowres/fold_4/" in n for n in names) and any("3d_cascade_fullres/fold_0/" in n for n in names)
    installed = install_bundle(ws, zip_path, to=tmp_path / "inst")
    inp = ws.raw_dataset(NAME) / "imagesTs"
    (written,) = run_predict(
        ws, inp, tmp_path / "out", model_dir=installed, configuration="3d_cascade_fullres", tta=False, device="cpu"
    )
    assert read_file(written)[0].shape == read_file(inp / "case_006_0000.nii.gz")[0].shape
