"""Hostile inputs for `autoseg predict` and `autoseg evaluate`: clear one-paragraph errors that name the file, no
traceback, and no output written (every input is checked before the first segmentation is written)."""

from __future__ import annotations

import gzip
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hostile_corpus import make_4d, nan_spacing_nii, truncate, with_value
from test_hostile_inputs import assert_clear_failure, run_cli

sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))
from fake_model import make_fake_model, tiny_configuration, write_case  # noqa: E402

from autoseg.data.geometry import Geometry  # noqa: E402
from autoseg.data.image_io import read_file, write_image, write_label  # noqa: E402

DS = "Dataset991_Fake"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from autoseg.workspace import Workspace

    one = Workspace.at(tmp_path_factory.mktemp("m1") / "ws")
    make_fake_model(one, folds=(0,))
    two = Workspace.at(tmp_path_factory.mktemp("m2") / "ws")
    make_fake_model(two, configurations=[tiny_configuration(channels=2)], folds=(0,), channels=2)
    return {1: one, 2: two}


def _rewrite(path: Path, fn) -> None:
    arr, geo = read_file(path)
    write_image(path, fn(arr[0]), geo)


def _self_link(path: Path) -> None:
    path.unlink()
    os.symlink(path.name, path)


B = "case_b_0000.nii.gz"
# (id, channels, damage(input folder), offending file name)
PREDICT_CASES = [
    ("zero_bytes", 1, lambda f: (f / B).write_bytes(b""), B),
    ("truncated_gz", 1, lambda f: truncate(f / B, drop=50), B),
    ("truncated_header", 1, lambda f: truncate(f / B, keep=200), B),
    ("garbage", 1, lambda f: (f / B).write_bytes(b"\x1f\x8b" + b"junk" * 100), B),
    ("nan_voxel", 1, lambda f: _rewrite(f / B, with_value(np.nan, np.float32)), B),
    ("nan_spacing", 1, lambda f: nan_spacing_nii(f / B), B),
    ("image_4d", 1, lambda f: make_4d(f / B), B),
    ("symlink_loop", 1, lambda f: _self_link(f / B), B),
    ("missing_channel", 2, lambda f: (f / "case_b_0001.nii.gz").unlink(), "case_b_0001.nii.gz"),
    (
        "mixed_endings",
        2,
        lambda f: (
            write_image(f / "case_b_0001.nrrd", *read_file(f / "case_b_0001.nii.gz")),
            (f / "case_b_0001.nii.gz").unlink(),
        ),
        "case_b_0001.nrrd",
    ),
    (
        "channel_geometry",
        2,
        lambda f: write_image(
            f / "case_b_0001.nii.gz", read_file(f / "case_b_0001.nii.gz")[0], Geometry.identity((1.0, 1.0, 1.0))
        ),
        "case_b_0001.nii.gz",
    ),
    ("extra_channel", 1, lambda f: shutil.copy(f / B, f / "case_b_0001.nii.gz"), "case_b_0001.nii.gz"),
]


def _inputs(folder: Path, channels: int) -> Path:
    for i, cid in enumerate(("case_a", "case_b", "case_c")):
        write_case(folder, cid, (6, 12, 10), (2.0, 1.0, 1.0), channels=channels, seed=i)
    return folder


@pytest.mark.parametrize("case", PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES])
def test_predict_refuses_broken_inputs_before_writing(case, models, tmp_path, capsys):
    _, channels, damage, name = case
    inp = _inputs(tmp_path / "in", channels)
    damage(inp)
    out = tmp_path / "out"
    ws = models[channels]
    argv = ["predict", "--workspace", str(ws.root), "-i", str(inp), "-o", str(out), "--device", "cpu"]
    rc, text = run_cli(argv + ["--disable-tta"], capsys)
    assert_clear_failure(rc, text, inp / name, None)
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())


@pytest.mark.parametrize("names", [("pätient ü 1", "pätient ü 1_2"), ("a", "a_1", "a_11")], ids=["non_ascii", "prefix"])
def test_predict_odd_but_valid_names_work(names, models, tmp_path, capsys):
    inp = tmp_path / "in dir"
    for i, cid in enumerate(names):
        write_case(inp, cid, (6, 12, 10), (2.0, 1.0, 1.0), seed=i)
    out = tmp_path / "out ü"
    argv = ["predict", "--workspace", str(models[1].root), "-i", str(inp), "-o", str(out), "--device", "cpu"]
    rc, text = run_cli(argv + ["--disable-tta"], capsys)
    assert rc == 0, text
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{c}.nii.gz" for c in names)
    for cid in names:
        assert read_file(out / f"{cid}.nii.gz")[0].shape == (1, 6, 12, 10)


def _labels(folder: Path, ids, shape=(6, 12, 10)) -> None:
    geo = Geometry.identity((2.0, 1.0, 1.0))
    for i, cid in enumerate(ids):
        lab = np.zeros(shape, np.uint8)
        lab[1:4, 2 + i : 8, 3:7] = 1
        write_label(folder / f"{cid}.nii.gz", lab, geo)


EVALUATE_CASES = [
    ("prediction_missing", lambda r, p: (p / "c.nii.gz").unlink(), "c.nii.gz"),
    ("reference_missing", lambda r, p: (r / "b.nii.gz").unlink(), "b.nii.gz"),
    ("shape_mismatch", lambda r, p: _labels(p, ["b"], shape=(6, 12, 9)), "b.nii.gz"),
    ("truncated_prediction", lambda r, p: truncate(p / "b.nii.gz", drop=30), "b.nii.gz"),
    ("zero_byte_reference", lambda r, p: (r / "a.nii.gz").write_bytes(b""), "a.nii.gz"),
    ("float_reference", lambda r, p: _rewrite(r / "a.nii.gz", with_value(0.5, np.float32)), "a.nii.gz"),
    (
        "gzip_garbage_prediction",
        lambda r, p: (p / "a.nii.gz").write_bytes(gzip.compress(b"x" * 400)),
        "a.nii.gz",
    ),
]


@pytest.mark.parametrize("case", EVALUATE_CASES, ids=[c[0] for c in EVALUATE_CASES])
def test_evaluate_refuses_broken_folders(case, tmp_path, capsys):
    _, damage, name = case
    ref, pred, out = tmp_path / "ref", tmp_path / "pred", tmp_path / "metrics"
    _labels(ref, "abc")
    _labels(pred, "abc")
    damage(ref, pred)
    argv = ["evaluate", "--workspace", str(tmp_path / "ws"), "-r", str(ref), "-p", str(pred), "-o", str(out)]
    rc, text = run_cli(argv + ["--labels", "1"], capsys)
    assert_clear_failure(rc, text, Path(name), None)
    assert not out.exists() or not any(out.iterdir())
    assert not list(pred.glob("*.csv")) and not list(pred.glob("*.json"))
