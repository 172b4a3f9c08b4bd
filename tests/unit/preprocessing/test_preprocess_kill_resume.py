"""SIGKILL `python -m autoseg preprocess` at several points; the re-run must equal one clean run, byte for byte."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from autoseg.preprocessing import storage
from autoseg.preprocessing.preprocess import preprocess_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "reliability"))
from kill_helpers import run_and_kill  # noqa: E402

NAME = "Dataset999_Synthetic"
N_CASES = 10


def _snapshot(ws):
    out = {}
    for folder in (ws.preprocessed_config(NAME, "3d_fullres"), ws.gt_folder(NAME)):
        for p in sorted(folder.iterdir()):
            if p.name != ".lock":
                out[f"{folder.name}/{p.name}"] = p.read_bytes()
    return out


def _run_and_kill(ws, jobs: int, ready) -> int:
    """Start the CLI, SIGKILL it (whole process group) as soon as `ready(folder)` is true; returns the exit code."""
    cmd = [sys.executable, "-m", "autoseg", "preprocess", "--workspace", str(ws.root), "-d", "999", "-j", str(jobs)]
    folder = ws.preprocessed_config(NAME, "3d_fullres")
    rc, _ = run_and_kill(cmd, lambda: folder.is_dir() and ready(folder), timeout=60)
    return rc


def _complete(folder) -> int:
    return len(storage.list_cases(folder))


def test_sigkill_mid_way_then_rerun_equals_clean_run(synthetic, workspace, make_plans, tmp_path):
    synthetic(n_cases=N_CASES, shape=(20, 32, 32), spacing=(2.0, 1.0, 1.0), ct=False, oblique_every=3)
    plans = make_plans(spacing=(1.0, 0.5, 0.5))  # 8x more voxels: a few hundred ms per case
    plans.save(workspace.plans_file(NAME))
    # the clean reference run, in another workspace with the same raw data
    clean = type(workspace).at(tmp_path / "clean")
    shutil.copytree(workspace.raw, clean.raw)
    preprocess_dataset(clean, NAME, plans, jobs=1)
    reference = _snapshot(clean)

    kill_points = [
        (1, lambda f: any(f.glob("*.npy")) or any(f.glob(".*.tmp"))),  # inside the first case
        (1, lambda f: _complete(f) >= 3),
        (2, lambda f: _complete(f) >= 6),  # with worker processes
    ]
    for jobs, ready in kill_points:
        assert _run_and_kill(workspace, jobs, ready) == -signal.SIGKILL
        folder = workspace.preprocessed_config(NAME, "3d_fullres")
        assert _complete(folder) < N_CASES
        for cid in storage.list_cases(folder):  # every case marked complete is fully readable
            case = storage.load_case(folder, cid, mmap=False)
            assert case.data.shape[1:] == case.seg.shape[1:] == case.properties.shape_after_resample
    time.sleep(0.2)  # let killed workers' file handles go
    done = subprocess.run(
        [sys.executable, "-m", "autoseg", "preprocess", "--workspace", str(workspace.root), "-d", "999", "-j", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "AUTOSEG_NO_PROGRESS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "already done" in done.stdout
    result = _snapshot(workspace)
    assert sorted(result) == sorted(reference)
    assert [k for k in result if result[k] != reference[k]] == []
    assert not [k for k in result if k.endswith(".tmp")]
    case = storage.load_case(workspace.preprocessed_config(NAME, "3d_fullres"), "case_000")
    assert np.isfinite(case.data).all()
