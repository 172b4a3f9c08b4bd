"""Concurrent runs: two folds trained at once, predict while a fold trains, preprocessing started twice."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kill_helpers import ENV, autoseg, hidden_temp_files

from autoseg.data.synthetic import make_synthetic_dataset
from autoseg.preprocessing.folders import FolderLock
from autoseg.preprocessing.pipeline import plan_and_preprocess
from autoseg.workspace import Workspace

sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))
sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from fake_model import write_case  # noqa: E402

NAME = "Dataset999_Synthetic"


def test_preprocessing_started_twice_is_locked(tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    make_synthetic_dataset(ws.raw, n_cases=14, shape=(24, 64, 64), spacing=(3.0, 0.7, 0.7), ct=True)
    clean = Workspace.at(tmp_path / "clean")
    shutil.copytree(ws.raw, clean.raw)
    plan_and_preprocess(clean, "999", ["3d_fullres"], jobs=1)
    ws.preprocessed_dataset(NAME).mkdir(parents=True)
    for f in ("plans.json", "fingerprint.json"):
        shutil.copy(clean.preprocessed_dataset(NAME) / f, ws.preprocessed_dataset(NAME) / f)
    cmd = autoseg("preprocess", "--workspace", str(ws.root), "-d", "999", "-c", "3d_fullres", "-j", "1")
    folder = ws.preprocessed_config(NAME, "3d_fullres")
    folder.mkdir(parents=True)
    # Hold the folder's lock as a running preprocess would (a real race depends on timing): the second run must
    # refuse at once, name the holder, and write nothing.
    with FolderLock(folder):
        second = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert second.returncode == 1
    assert f"another process (pid {os.getpid()}) is preprocessing this configuration" in second.stderr
    assert "Traceback" not in second.stderr
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]
    first = subprocess.run(cmd, env=ENV, capture_output=True, text=True)  # once the lock is free it runs
    assert first.returncode == 0, first.stderr
    got = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"}
    ref_folder = clean.preprocessed_config(NAME, "3d_fullres")
    want = {p.name: p.read_bytes() for p in ref_folder.iterdir() if p.name != ".lock"}
    assert got == want and not hidden_temp_files(folder)


TRAIN = ["--set", "iterations_per_epoch=2", "--set", "val_iterations_per_epoch=1", "--set", "validate_at_end=false"]


def _train(ws: Workspace, fold: int, epochs: int) -> subprocess.Popen:
    cmd = autoseg(
        "train", "-d", "990", "-c", "3d_fullres", "-f", str(fold), "--workspace", str(ws.root), "--device", "cpu",
        "-j", "0", "--set", f"epochs={epochs}", *TRAIN,
    )  # fmt: skip
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_folds_at_once_then_predict_while_a_third_trains(tmp_path):
    from tiny_run_data import DATASET, make_tiny_dataset

    from autoseg.data.splits import make_splits
    from autoseg.training.checkpoint import load_checkpoint

    ws = Workspace.at(tmp_path / "ws")
    make_tiny_dataset(ws)
    assert not ws.splits_file(DATASET).exists()
    a, b = _train(ws, 0, 3), _train(ws, 1, 3)
    for proc in (a, b):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    runs = [ws.run_dir(DATASET, "default", "3d_fullres", "default", f) for f in (0, 1)]
    assert runs[0] != runs[1]
    for fold, run in enumerate(runs):
        ckpt = load_checkpoint(run / "checkpoint_final.pt")
        assert ckpt["epoch"] == 3 and ckpt["fold"] == fold
        assert len((run / "progress.csv").read_text().strip().splitlines()) == 1 + 3
    splits = json.loads(ws.splits_file(DATASET).read_text())
    ids = [f"case_{i:03d}" for i in range(6)]
    assert splits == json.loads(json.dumps(make_splits(ids)))  # one content, whichever process wrote it
    assert not hidden_temp_files(ws.preprocessed_dataset(DATASET)) and not hidden_temp_files(ws.results)

    inp = tmp_path / "in"
    for i in range(3):
        write_case(inp, f"t{i}", (10, 20, 20), (2.0, 1.0, 1.0), seed=i)
    third = _train(ws, 2, 25)
    run2 = ws.run_dir(DATASET, "default", "3d_fullres", "default", 2)
    deadline = time.monotonic() + 120
    while not (run2 / "checkpoint_latest.pt").is_file() and time.monotonic() < deadline:
        time.sleep(0.01)
    pred = subprocess.run(
        autoseg("predict", "--workspace", str(ws.root), "-d", "990", "-c", "3d_fullres", "-f", "0", "1",
                "-i", str(inp), "-o", str(tmp_path / "out"), "--device", "cpu", "--disable-tta"),
        env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    still_training = third.poll() is None
    _, err = third.communicate(timeout=300)
    assert pred.returncode == 0, pred.stderr
    assert still_training, "the third fold finished before predict ran"
    assert third.returncode == 0, err[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["t0.nii.gz", "t1.nii.gz", "t2.nii.gz"]
    assert load_checkpoint(run2 / "checkpoint_final.pt")["epoch"] == 25
    assert json.loads(ws.splits_file(DATASET).read_text()) == splits
