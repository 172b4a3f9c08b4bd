"""SIGKILL at seeded random points (time- or file-appearance-based), then re-run / --continue / --resume:
preprocess and predict give byte-identical outputs to one uninterrupted run, no corrupt file is ever visible, and
training resumes exactly (bit-identical weights in deterministic CPU mode) losing at most the running epoch."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kill_helpers import ENV, after, autoseg, hidden_temp_files, run_and_kill

from autoseg.data.image_io import read_file
from autoseg.data.synthetic import make_synthetic_dataset
from autoseg.preprocessing import storage
from autoseg.preprocessing.pipeline import plan_and_preprocess
from autoseg.workspace import Workspace

sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))
sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from fake_model import make_fake_model, tiny_configuration, write_case  # noqa: E402

NAME = "Dataset999_Synthetic"
SEED = 20240607
N_CASES = 24  # room for five kills even on a fast, idle machine


def _tree(*folders: Path) -> dict[str, bytes]:
    return {
        f"{f.name}/{p.relative_to(f)}": p.read_bytes()
        for f in folders
        if f.is_dir()
        for p in sorted(f.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


# ---- preprocessing -----------------------------------------------------------------------------------------------
def test_preprocess_killed_at_five_random_points(tmp_path):
    rng = random.Random(SEED)
    clean = Workspace.at(tmp_path / "clean")
    make_synthetic_dataset(clean.raw, n_cases=N_CASES, shape=(24, 64, 64), spacing=(3.0, 0.7, 0.7), ct=True)
    plan_and_preprocess(clean, "999", ["3d_fullres"], jobs=1)
    folder_of = lambda ws: ws.preprocessed_config(NAME, "3d_fullres")  # noqa: E731
    reference = _tree(folder_of(clean), clean.gt_folder(NAME))
    ws = Workspace.at(tmp_path / "killed")
    shutil.copytree(clean.raw, ws.raw)
    ws.preprocessed_dataset(NAME).mkdir(parents=True)
    for f in ("plans.json", "fingerprint.json"):
        shutil.copy(clean.preprocessed_dataset(NAME) / f, ws.preprocessed_dataset(NAME) / f)
    folder = folder_of(ws)
    cmd = autoseg("preprocess", "--workspace", str(ws.root), "-d", "999", "-c", "3d_fullres")

    def more(k: int):  # k more complete cases than when the run was started
        start: list[int] = []
        return lambda: (
            (start or start.append(len(storage.list_cases(folder))) or True)
            and len(storage.list_cases(folder)) >= start[0] + k
        )

    points = [  # the 2-worker points first, while many cases remain
        ("first temp file", 1, lambda: bool(hidden_temp_files(folder))),
        (
            "random delay after a temp file, 2 workers",
            2,
            after(rng.uniform(0.0, 0.05), lambda: bool(hidden_temp_files(folder))),
        ),
        ("k more cases, 2 workers", 2, more(rng.randint(1, 2))),
        ("random delay after a case", 1, after(rng.uniform(0.0, 0.05), more(1))),
        ("k more cases", 1, more(rng.randint(1, 2))),
    ]
    for what, jobs, ready in points:
        rc, err = run_and_kill([*cmd, "-j", str(jobs)], ready)
        assert rc == -signal.SIGKILL, f"{what}: not killed (rc {rc}): {err[-1000:]}"
        done = storage.list_cases(folder)
        assert len(done) < N_CASES, what
        for cid in done:  # every case marked complete is whole
            case = storage.load_case(folder, cid, mmap=False)
            assert case.data.shape[1:] == case.seg.shape[1:] == case.properties.shape_after_resample
    res = subprocess.run([*cmd, "-j", "2"], capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stderr
    result = _tree(folder, ws.gt_folder(NAME))
    assert sorted(result) == sorted(reference)
    assert [k for k in result if result[k] != reference[k]] == []
    assert not hidden_temp_files(folder) and not hidden_temp_files(ws.gt_folder(NAME))


# ---- prediction --------------------------------------------------------------------------------------------------
def test_predict_killed_at_five_random_points_then_continue(tmp_path):
    rng = random.Random(SEED + 1)
    ws = Workspace.at(tmp_path / "ws")
    make_fake_model(ws, configurations=[tiny_configuration(patch=(8, 16, 16))], folds=(0, 1))
    inp = tmp_path / "in"
    n_cases = 16  # enough that the late kill point lands before the last case even when prediction is fast
    for i in range(n_cases):
        write_case(inp, f"case_{i:02d}", (12, 40, 36), (2.0, 0.9, 1.1), seed=i)
    base = ["predict", "--workspace", str(ws.root), "-i", str(inp), "--device", "cpu", "-d", "991", "--disable-tta"]
    ref = tmp_path / "reference"
    assert subprocess.run(autoseg(*base, "-o", str(ref)), env=ENV, capture_output=True).returncode == 0
    out = tmp_path / "out"
    k1, k2 = rng.randint(3, 5), rng.randint(5, 7)
    outputs = lambda: [p for p in out.glob("*.nii.gz") if not p.name.startswith(".")]  # noqa: E731
    capped = lambda ready, most: lambda: ready() or len(outputs()) >= most  # noqa: E731
    points = [
        ("first temp file", lambda: out.is_dir() and bool(hidden_temp_files(out))),
        # a time-based point is also capped by a count, so a fast machine cannot finish every case inside the delay
        ("random delay", capped(after(rng.uniform(0.1, 0.6), lambda: len(outputs()) >= 1), 4)),
        ("k outputs", lambda k=k1: len(outputs()) >= k),
        ("temp file after k", lambda k=k2: len(outputs()) >= k and bool(hidden_temp_files(out))),
        ("random delay late", capped(after(rng.uniform(0.0, 0.05), lambda: len(outputs()) >= 9), 12)),
    ]
    for what, ready in points:
        rc, err = run_and_kill(autoseg(*base, "-o", str(out), "--continue"), ready)
        assert rc == -signal.SIGKILL, f"{what}: not killed (rc {rc}): {err[-1000:]}"
        assert len(outputs()) < n_cases, what
        for p in outputs():  # never a half-written segmentation under its final name
            assert read_file(p)[0].shape == (1, 12, 40, 36)
    res = subprocess.run(autoseg(*base, "-o", str(out), "--continue"), env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in outputs()) == sorted(p.name for p in ref.glob("*.nii.gz"))
    for p in ref.glob("*.nii.gz"):
        a, b = read_file(p), read_file(out / p.name)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1]
        assert p.read_bytes() == (out / p.name).read_bytes()


# ---- training ----------------------------------------------------------------------------------------------------
TRAIN_SET = ["epochs=10", "iterations_per_epoch=2", "val_iterations_per_epoch=1", "validate_at_end=false"]


def _train_cmd(ws: Workspace, *extra: str) -> list[str]:
    sets = [a for s in TRAIN_SET for a in ("--set", s)]
    return autoseg(
        "train", "-d", "990", "-c", "3d_fullres", "-f", "0", "--workspace", str(ws.root), "--device", "cpu",
        "-j", "0", "--deterministic", *sets, *extra,
    )  # fmt: skip


@pytest.mark.slow
def test_train_killed_at_five_random_points_resumes_bit_identical(tmp_path):
    from test_resume import _assert_same_weights
    from tiny_run_data import DATASET, make_tiny_dataset

    from autoseg.training.checkpoint import load_checkpoint

    rng = random.Random(SEED + 2)
    straight = Workspace.at(tmp_path / "straight")
    make_tiny_dataset(straight)
    res = subprocess.run(_train_cmd(straight), env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ws = Workspace.at(tmp_path / "killed")
    make_tiny_dataset(ws)
    run = ws.run_dir(DATASET, "default", "3d_fullres", "default", 0)
    latest = run / "checkpoint_latest.pt"

    def epoch() -> int:
        try:
            return int(load_checkpoint(latest)["epoch"]) if latest.is_file() else 0
        except Exception:  # noqa: BLE001 - being replaced at this very moment
            return -1

    reached = 0
    for i in range(5):  # each run must pass its start epoch, then dies at a random moment of a later epoch
        target = reached + rng.randint(1, 2)
        delayed = after(rng.uniform(0.0, 0.4), lambda t=target: epoch() >= t)
        ready = lambda d=delayed, t=target: d() or epoch() >= t + 1  # noqa: E731 - a fast machine: one epoch at most
        rc, err = run_and_kill(_train_cmd(ws, *(["--resume"] if i else [])), ready, timeout=240)
        assert rc == -signal.SIGKILL, f"kill {i}: rc {rc}: {err[-1500:]}"
        assert not (run / "checkpoint_final.pt").exists()
        ckpt = load_checkpoint(latest)  # never corrupt
        logged = (run / "progress.csv").read_text().strip().splitlines()[1:]
        assert len(logged) <= ckpt["epoch"], "an epoch was logged but not checkpointed"
        assert ckpt["epoch"] >= target and ckpt["epoch"] > reached  # progress; the epoch in flight is all that is lost
        if i:
            assert f"resuming {run} at epoch {reached} of 10" in err
        reached = ckpt["epoch"]
    res = subprocess.run(_train_cmd(ws, "--resume"), env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"resuming {run} at epoch {reached} of 10" in res.stderr
    straight_run = straight.run_dir(DATASET, "default", "3d_fullres", "default", 0)
    _assert_same_weights(straight_run / "checkpoint_final.pt", run / "checkpoint_final.pt")
    assert not hidden_temp_files(run)
