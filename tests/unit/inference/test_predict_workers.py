"""predict: --statistics, export worker pool (-j), stale temporary files with --continue, shared weights loading."""

from __future__ import annotations

import math
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from fake_model import make_fake_model, tiny_configuration, write_case

from autoseg.cli.main import main
from autoseg.data.image_io import read_file
from autoseg.errors import ConfigError
from autoseg.inference.exporter import export_workers, network_zoom
from autoseg.inference.predictor import Predictor, run_predict
from autoseg.inference.source import resolve_source
from autoseg.networks.weights import load_weights
from autoseg.training.checkpoint import load_checkpoint
from autoseg.workspace import Workspace

SPACINGS = {"a": (2.0, 1.0, 1.0), "b": (3.0, 0.8, 0.5), "c": (1.5, 1.2, 0.9)}


@pytest.fixture
def model(workspace: Workspace):
    make_fake_model(workspace, folds=(0,))
    return workspace


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    for i, (cid, spacing) in enumerate(SPACINGS.items()):
        write_case(folder, cid, (5, 14, 12), spacing, seed=10 + i)
    return folder


def _run(ws, inp, out, **kw):
    kw.setdefault("tta", False)
    kw.setdefault("workers", 1)
    return run_predict(ws, inp, out, dataset=991, device="cpu", **kw)


def _expected_rows(inp, out, cid):
    """Hand count: voxels of each label x voxel volume, and the image mean inside it."""
    seg = read_file(out / f"{cid}.nii.gz")[0][0]
    img = read_file(inp / f"{cid}_0000.nii.gz")[0][0]
    voxel_mm3 = math.prod(SPACINGS[cid])
    rows = {}
    for value in (1, 2):
        mask = seg == value
        mean = float(img[mask].astype(np.float64).mean()) if mask.any() else math.nan
        rows[value] = (int(mask.sum()), mask.sum() * voxel_mm3 / 1000.0, mean)
    return rows


def _check_table(table: pd.DataFrame, inp, out, cases) -> None:
    assert list(table.columns) == [
        "case", "label", "label_name", "voxels", "volume_ml", "area_mm2", "mean_intensity_0_MR0",
    ]  # fmt: skip
    assert list(zip(table["case"], table["label"])) == [(c, v) for c in cases for v in (1, 2)]
    assert list(table["label_name"]) == ["organ1", "organ2"] * len(cases)
    assert table["area_mm2"].isna().all()
    for row in table.itertuples():
        voxels, volume, mean = _expected_rows(inp, out, row.case)[row.label]
        assert row.voxels == voxels
        assert row.volume_ml == pytest.approx(volume, rel=1e-5)
        if voxels:
            assert row.mean_intensity_0_MR0 == pytest.approx(mean, rel=1e-5)
        else:
            assert math.isnan(row.mean_intensity_0_MR0)
    assert (table["voxels"] > 0).sum() >= 2  # the random network predicts some foreground: the check means something


def test_statistics_csv_rows_volumes_and_mean_intensity(model, inputs, tmp_path):
    out = tmp_path / "out"
    written = _run(model, inputs, out, statistics=True)
    assert [p.name for p in written] == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    _check_table(pd.read_csv(out / "statistics.csv"), inputs, out, ["a", "b", "c"])
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # written atomically: no temporary left


def test_statistics_with_continue_cover_skipped_cases_and_stale_temps_go(model, inputs, tmp_path, autoseg_log):
    out = tmp_path / "out"
    assert [p.name for p in _run(model, inputs, out, part="2/3")] == ["b.nii.gz"]
    stale = out / ".a.nii.gz.k3j_x9q2.tmp.nii.gz"  # what a killed write leaves (serialization.new_temp_file)
    stale.write_bytes(b"half a file")
    other = out / ".notes"
    other.write_text("kept")
    before = (out / "b.nii.gz").stat().st_mtime_ns
    assert _run(model, inputs, out, part="2/3", resume=True) == []
    assert stale.exists()  # with --part another share may be writing there: its temporary files stay
    written = _run(model, inputs, out, resume=True, statistics=True)
    assert [p.name for p in written] == ["a.nii.gz", "c.nii.gz"]
    assert (out / "b.nii.gz").stat().st_mtime_ns == before  # skipped, its rows read back from the files
    assert not stale.exists() and other.read_text() == "kept"
    assert "removed 1 stale temporary file left by an interrupted run" in autoseg_log.text
    _check_table(pd.read_csv(out / "statistics.csv"), inputs, out, ["a", "b", "c"])
    # nothing left to predict: the table is still written for every case of the folder
    (out / "statistics.csv").unlink()
    assert _run(model, inputs, out, resume=True, statistics=True) == []
    _check_table(pd.read_csv(out / "statistics.csv"), inputs, out, ["a", "b", "c"])


def _npz_members(path):
    with zipfile.ZipFile(path) as zf:  # the zip entries carry a time stamp; their content must be equal
        return {name: zf.read(name) for name in zf.namelist()}


def test_one_and_two_export_workers_write_identical_files(model, inputs, tmp_path):
    one = _run(model, inputs, tmp_path / "j1", save_probabilities=True, statistics=True, workers=1)
    two = _run(model, inputs, tmp_path / "j2", save_probabilities=True, statistics=True, workers=2)
    assert [p.name for p in one] == [p.name for p in two] == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    for a, b in zip(one, two):
        assert a.read_bytes() == b.read_bytes()
        cid = a.name[: -len(".nii.gz")]
        assert _npz_members(a.parent / f"{cid}.npz") == _npz_members(b.parent / f"{cid}.npz")
    assert (tmp_path / "j1" / "statistics.csv").read_bytes() == (tmp_path / "j2" / "statistics.csv").read_bytes()
    # the export pool is private: joblib's process pool (evaluation, preprocessing) still works in this process
    from autoseg.evaluation.metrics import evaluate_folder

    df, summary = evaluate_folder(tmp_path / "j1", tmp_path / "j2", [1, 2], ".nii.gz", jobs=2)
    assert len(df) == 6 and summary["num_cases"] == 3
    assert summary["foreground_mean"]["dice"] == 1.0  # identical folders


def test_default_export_workers_follow_the_device(monkeypatch):
    from autoseg.inference import predictor

    monkeypatch.setattr(predictor.os, "cpu_count", lambda: 2)
    assert predictor.default_export_workers(torch.device("cpu")) == 1
    assert predictor.default_export_workers(torch.device("cuda")) == 2
    monkeypatch.setattr(predictor.os, "cpu_count", lambda: 16)
    assert predictor.default_export_workers(torch.device("cpu")) == 2


def test_export_workers_are_sized_from_the_largest_case(model, inputs, tmp_path, autoseg_log):
    from autoseg.inference.inputs import list_inputs

    src = resolve_source(model, 991)
    pred = [Predictor(src, "3d_fullres", [0], "cpu", tta=False)]
    write_case(inputs, "big", (20, 30, 40), (1.0, 0.5, 0.5), seed=3)  # largest file; zoom 2 x 2 x 2 = 8
    cases = list_inputs(inputs, src)
    assert network_zoom((1.0, 0.5, 0.5), (0, 1, 2), pred[0].configuration) == pytest.approx(1 / 8)
    assert network_zoom((4.0, 2.0, 1.0), (2, 0, 1), pred[0].configuration) == pytest.approx(4.0)
    need = 20 * 30 * 40 * 3 * 4 * 4  # 3 classes, float32, COPIES["predict"] = 4; zoom below 1 counts as 1
    assert export_workers(2, cases, pred, available=10 * need) == 2
    assert export_workers(8, cases[:3], pred, available=10 * need) == 3  # no more workers than cases
    assert export_workers(1, cases, pred, available=10 * need) == 1
    assert autoseg_log.text == ""
    assert export_workers(4, cases, pred, available=2.6 * need) == 2  # 0.8 x 2.6 = 2.08 cases fit
    assert "export workers: 40x30x20 image (1 channel) with 3 class probabilities needs" in autoseg_log.text
    assert "using 2 workers instead of 4" in autoseg_log.text
    with pytest.raises(ConfigError, match="-j/--workers 0: must be at least 1"):
        _run(model, inputs, tmp_path / "o", workers=0)


def test_weights_are_loaded_by_one_function(model, tmp_path):
    src = resolve_source(model, 991)
    ckpt = src.weights["3d_fullres"][0]
    state = load_weights(ckpt)
    assert state.keys() == load_checkpoint(ckpt)["model"].keys()  # a checkpoint gives its 'model' entry
    plain = tmp_path / "weights.pt"
    torch.save(state, plain)
    assert all(torch.equal(state[k], v) for k, v in load_weights(plain).items())
    bad = tmp_path / "bad.pt"
    torch.save({"w": torch.zeros(1), "code": tmp_path}, bad)
    with pytest.raises(ConfigError, match=r"bad.pt: refused to load: the weights file contains pickled Python objects"):
        load_weights(bad)
    (tmp_path / "short.pt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ConfigError, match=r"short.pt: not a readable weights file"):
        load_weights(tmp_path / "short.pt")


def test_two_configurations_are_averaged_the_same_way_in_workers(workspace, inputs, tmp_path):
    confs = [tiny_configuration(), tiny_configuration("3d_lowres", spacing=(3.0, 2.0, 2.0))]
    make_fake_model(workspace, configurations=confs, folds=(0,))
    src = resolve_source(workspace, 991)
    preds = [Predictor(src, c, [0], "cpu", tta=False) for c in ("3d_fullres", "3d_lowres")]
    from autoseg.data.probabilities import average_probabilities, load_probabilities
    from autoseg.inference.predictor import predict_folder

    written = predict_folder(preds, inputs, tmp_path / "o", save_probabilities=True, workers=2)
    image, geometry = read_file(inputs / "c_0000.nii.gz")
    expected = average_probabilities([p.probabilities(image, geometry) for p in preds])
    np.testing.assert_array_equal(load_probabilities(tmp_path / "o" / "c.npz"), expected.astype(np.float16))
    np.testing.assert_array_equal(read_file(written[2])[0][0], np.argmax(expected, 0))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_export_error_names_the_case_and_leaves_no_partial_output(model, inputs, tmp_path, capsys, workers):
    out = tmp_path / "out"
    (out / "b.nii.gz").mkdir(parents=True)  # the label file cannot be put in place: the export of b fails
    argv = ["predict", "-i", str(inputs), "-o", str(out), "-d", "991", "--device", "cpu", "--disable-tta"]
    code = main([*argv, "--save-probabilities", "-j", workers, "--workspace", str(model.root)])
    err = capsys.readouterr().err
    assert code == 1
    line = [x for x in err.splitlines() if "error" in x]
    assert len(line) == 1 and "Traceback" not in err
    assert f"case 'b': exporting {out / 'b.nii.gz'} failed (IsADirectoryError" in line[0]
    assert not (out / "b.npz").exists()  # no probabilities without their segmentation
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert (out / "a.nii.gz").is_file()  # the case before finished completely
    assert not (out / "statistics.csv").exists()


class _DiesWhenUnpickled:
    """Unpickled in the export worker, it ends that process at once (as the out-of-memory killer would)."""

    def __reduce__(self):
        import os

        return (os._exit, (3,))


def test_a_dead_export_worker_is_a_clear_error(tmp_path):
    from autoseg.errors import ImageIOError
    from autoseg.inference.exporter import Exporter, ExportJob

    job = ExportJob("k", [], None, tmp_path / "k.nii.gz", label_names={"x": _DiesWhenUnpickled()})
    with pytest.raises(
        ImageIOError, match=r"case 'k': an export worker process died .*rerun with fewer export workers"
    ):
        with Exporter(2) as exporter:
            exporter.submit(job)
            exporter.finish()
    assert not list(tmp_path.iterdir())
