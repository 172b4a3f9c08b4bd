"""Preprocessed files must be bit-identical whatever `-j` and the BLAS / OpenMP / torch thread counts.

Each run is a fresh subprocess, so that the thread settings hold from the start (BLAS reads them when loaded) and
the main process does the work itself with ``jobs=1`` while ``jobs=2`` hands it to loky workers (which joblib limits
to cores // 2 threads): the situation of a killed run resumed with another `-j`, whose files must equal a clean
run's. Resampling once used BLAS matrix products, whose summation order depends on the thread count (seen as 1e-6
differences on a Zen CPU); `_environment` forces OpenBLAS's Haswell kernels (which do that) where the CPU runs them,
so that a BLAS product in preprocessing fails these tests on any x86-64 machine, not only on some.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

NAME = "Dataset999_Synthetic"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# argv: workspace root, jobs, threads (0: leave the libraries' defaults). Prints the number of jobs used.
RUN = """
import sys

from autoseg.planning.plans import Plans
from autoseg.preprocessing.preprocess import preprocess_dataset
from autoseg.workspace import Workspace

root, jobs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if threads and "torch" in sys.modules:  # preprocessing does not import torch; if it did, OMP_NUM_THREADS and this
    sys.modules["torch"].set_num_threads(threads)  # would set its threads
ws = Workspace.at(root)
report = preprocess_dataset(ws, sys.argv[4], Plans.load(ws.plans_file(sys.argv[4])), jobs=jobs)
print(report.jobs)
"""


def _cpu_runs_haswell_kernels() -> bool:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return False
    return {"avx2", "fma"} <= set(flags.split())


def _environment(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env["AUTOSEG_NO_PROGRESS"] = "1"
    if threads:
        env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    if _cpu_runs_haswell_kernels():
        env["OPENBLAS_CORETYPE"] = "Haswell"  # ignored by other BLAS libraries and by non-DYNAMIC_ARCH builds
    return env


def _preprocess(workspace, tmp_path: Path, tag: str, jobs: int, threads: int) -> dict[str, bytes]:
    """Preprocess a copy of `workspace`'s raw data and plans in a subprocess; {relative path: bytes} of the output."""
    root = tmp_path / tag
    shutil.copytree(workspace.raw, root / "raw")
    (root / "preprocessed" / NAME).mkdir(parents=True)
    shutil.copy(workspace.plans_file(NAME), root / "preprocessed" / NAME)
    cmd = [sys.executable, "-c", RUN, str(root), str(jobs), str(threads), NAME]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_environment(threads), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == str(jobs)  # the requested workers were used (not reduced for memory)
    out = root / "preprocessed" / NAME
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in (".lock", "plans.json")
    }


def _assert_identical(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    assert sorted(a) == sorted(b)
    assert any(k.endswith("_seg.npy") for k in a) and any(k.endswith("_locs.npy") for k in a)
    for key in sorted(k for k in a if k.endswith(".npy")):
        x, y = (np.load(io.BytesIO(d[key])) for d in (a, b))
        assert x.dtype == y.dtype and x.shape == y.shape, key
        same = np.array_equal(x, y)
        assert same, f"{key}: max |difference| {np.abs(x.astype(np.float64) - y.astype(np.float64)).max():g}"
    assert [k for k in a if a[k] != b[k]] == []  # every byte, properties (.json) and settings included


def _dataset(synthetic, workspace, make_plans) -> None:
    """Two cases (two tasks, so that jobs=2 uses two workers) resampled with order 3 / one-hot linear on every
    axis (3d_fullres) and in-plane only (2d), z-score normalised inside the nonzero mask."""
    synthetic(n_cases=2, shape=(16, 32, 32), spacing=(2.0, 1.0, 1.0), ct=False, oblique_every=2)
    plans = make_plans(spacing=(1.0, 0.6, 0.6), two_d_spacing=(0.7, 0.7), use_mask=(True,))
    plans.save(workspace.plans_file(NAME))


def test_output_does_not_depend_on_blas_omp_or_torch_threads(synthetic, workspace, make_plans, tmp_path):
    _dataset(synthetic, workspace, make_plans)
    one = _preprocess(workspace, tmp_path, "threads1", jobs=1, threads=1)
    two = _preprocess(workspace, tmp_path, "threads2", jobs=1, threads=2)
    _assert_identical(one, two)


def test_output_does_not_depend_on_jobs(synthetic, workspace, make_plans, tmp_path):
    _dataset(synthetic, workspace, make_plans)
    serial = _preprocess(workspace, tmp_path, "jobs1", jobs=1, threads=0)  # this process, all cores for BLAS
    workers = _preprocess(workspace, tmp_path, "jobs2", jobs=2, threads=0)  # 2 loky workers, cores // 2 each
    _assert_identical(serial, workers)
