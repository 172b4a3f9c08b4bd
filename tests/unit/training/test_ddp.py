"""DDP on CPU (gloo) with torchrun: 2 processes train a few steps and leave one consistent checkpoint."""

import os
import subprocess
import sys

import pytest
import torch
from tiny_run import tiny_workspace, train_args
from tiny_run_data import DATASET

from autoseg.errors import ConfigError
from autoseg.training.checkpoint import load_checkpoint
from autoseg.training.distributed import env_info, rank_oversampling, split_batch


def test_split_batch_remainder_to_first_ranks():
    assert [split_batch(9, r, 4) for r in range(4)] == [(0, 3), (3, 2), (5, 2), (7, 2)]
    with pytest.raises(ConfigError, match="batch size 2 is smaller than the number of processes 3"):
        split_batch(2, 0, 3)


def test_oversampling_pattern_preserved():
    # single process, batch 9, p=0.33: samples j >= round(9 * 0.67) = 6 are forced -> 3 forced
    for world in (1, 2, 3, 4):
        forced = sum(round(rank_oversampling(9, 0.33, r, world) * split_batch(9, r, world)[1]) for r in range(world))
        assert forced == 3
    assert [rank_oversampling(2, 0.33, r, 2) for r in range(2)] == [0.0, 1.0]


def test_env_info():
    assert not env_info({}).enabled
    info = env_info({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert info.enabled and not info.is_main and info.local_rank == 1


def test_torchrun_two_processes_one_consistent_checkpoint(tmp_path):
    ws, _ = tiny_workspace(tmp_path / "ws")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    cmd = [*torchrun, "-m", "autoseg", *train_args(ws, epochs=2)]
    env = {**os.environ, "AUTOSEG_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "DDP: weights identical on all 2 ranks" in out.stderr  # all_reduce comparison after the last step
    run_dir = ws.run_dir(DATASET, "default", "3d_fullres", "default", 0)
    assert out.stdout.count("fold 0: 2 epochs") == 1  # only rank 0 reports and writes
    assert sorted(p.name for p in run_dir.glob("checkpoint_*.pt")) == [
        "checkpoint_best.pt",
        "checkpoint_final.pt",
        "checkpoint_latest.pt",
    ]
    assert not list(run_dir.glob(".*.tmp"))
    ckpt = load_checkpoint(run_dir / "checkpoint_final.pt")
    assert ckpt["epoch"] == 2 and len(ckpt["curves"]["train_loss"]) == 2
    assert not any(k.startswith("module.") for k in ckpt["model"])  # unwrapped weights, loadable without DDP
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert (run_dir / "log.txt").read_text().count("epoch ") == 2
