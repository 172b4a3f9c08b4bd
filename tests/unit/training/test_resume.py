"""Resume is exact: N epochs straight == N/2 epochs, stop (or SIGKILL), --resume for the rest (CPU, deterministic)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_run import quick_config, tiny_workspace, train_args
from tiny_run_data import DATASET

from autoseg.errors import ConfigError
from autoseg.training.checkpoint import load_checkpoint
from autoseg.training.config import TrainConfig
from autoseg.training.trainer import Trainer, train_fold, trainers

CFG = quick_config(epochs=4)


class Stop(Exception):
    pass


@trainers.register("stop_after_epoch_1")
class StopTrainer(Trainer):
    """Simulates a kill right after epoch 1's checkpoint was written."""

    def on_epoch_end(self, epoch, record):
        if epoch == 1:
            raise Stop


@pytest.fixture(scope="module", autouse=True)
def _restore_determinism():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def _run(ws, plans, cfg, trainer="default", resume=False):
    return train_fold(
        ws,
        DATASET,
        plans,
        "3d_fullres",
        0,
        cfg,
        trainer=trainer,
        device="cpu",
        resume=resume,
        num_workers=0,
        deterministic=True,
    )


def _assert_same_weights(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["epoch"] == cb["epoch"]
    assert ca["model"].keys() == cb["model"].keys()
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key
    mom_a = [s["momentum_buffer"] for s in ca["optimizer"]["state"].values()]
    mom_b = [s["momentum_buffer"] for s in cb["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(mom_a, mom_b))
    assert ca["curves"]["train_loss"] == cb["curves"]["train_loss"]
    assert ca["curves"]["dice"] == cb["curves"]["dice"]


@pytest.fixture(scope="module")
def straight(tiny):
    ws, plans = tiny
    return _run(ws, plans, CFG)


def test_stop_and_resume_is_exact(tiny, straight):
    ws, plans = tiny
    with pytest.raises(Stop):
        _run(ws, plans, CFG, trainer="stop_after_epoch_1")
    run_dir = ws.run_dir(DATASET, "default", "3d_fullres", "stop_after_epoch_1", 0)
    assert load_checkpoint(run_dir / "checkpoint_latest.pt")["epoch"] == 2
    assert not (run_dir / "checkpoint_final.pt").exists()
    result = _run(ws, plans, CFG, trainer="stop_after_epoch_1", resume=True)
    assert result.epochs_done == 4
    _assert_same_weights(straight.final_checkpoint, run_dir / "checkpoint_final.pt")
    assert len((run_dir / "log.txt").read_text().splitlines()) == 1 + 4  # header + one line per epoch


PLUGIN = """
import os, time
from autoseg.training.trainer import Trainer, trainers

@trainers.register("sleepy")
class Sleepy(Trainer):  # pauses after each checkpoint while SLEEPY_SECONDS is set, so the test can kill it there
    def on_epoch_end(self, epoch, record):
        time.sleep(float(os.environ.get("SLEEPY_SECONDS", "0")))
"""


def test_sigkill_and_resume_is_exact(tiny, straight, tmp_path):
    ws, _ = tiny
    (tmp_path / "sleepy_plugin.py").write_text(PLUGIN)
    ws2, _ = tiny_workspace(tmp_path / "ws_kill")
    extra = ("--deterministic", "--trainer", "sleepy", "--plugin", "sleepy_plugin")
    cmd = [sys.executable, "-m", "autoseg", *train_args(ws2, *extra, epochs=4)]
    env = {**os.environ, "AUTOSEG_NO_PROGRESS": "1", "PYTHONPATH": str(tmp_path), "SLEEPY_SECONDS": "30"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_dir = ws2.run_dir(DATASET, "default", "3d_fullres", "sleepy", 0)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (run_dir / "checkpoint_latest.pt").is_file():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (run_dir / "checkpoint_final.pt").exists()
    assert load_checkpoint(run_dir / "checkpoint_latest.pt")["epoch"] == 1
    env["SLEEPY_SECONDS"] = "0"
    out = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"resuming {run_dir} at epoch 1 of 4" in out.stderr
    _assert_same_weights(straight.final_checkpoint, run_dir / "checkpoint_final.pt")


def test_extend_finished_run(tiny, straight):
    ws, plans = tiny
    src = straight.run_dir
    ws3, _ = tiny_workspace(ws.root.parent / "ws_extend")
    dst = ws3.run_dir(DATASET, "default", "3d_fullres", "default", 0)
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    again = _run(ws3, plans, CFG, resume=True)  # finished, same epochs: nothing to train
    assert again.epochs_done == 4
    longer = TrainConfig(epochs=6, validate_at_end=False)  # other settings come from the saved config
    result = _run(ws3, plans, longer, resume=True)
    ckpt = load_checkpoint(result.final_checkpoint)
    assert result.epochs_done == 6 and ckpt["epoch"] == 6
    assert ckpt["train_config"]["epochs"] == 6 and ckpt["train_config"]["iterations_per_epoch"] == 2
    lrs = ckpt["curves"]["lr"]
    assert lrs[:4] == load_checkpoint(src / "checkpoint_final.pt")["curves"]["lr"]
    assert lrs[4] == pytest.approx(0.01 * (1 - 4 / 6) ** 0.9)  # schedule recomputed with the new total
    with pytest.raises(ConfigError, match="already did 6 epochs; --set epochs=5 cannot shorten it"):
        _run(ws3, plans, TrainConfig(epochs=5, validate_at_end=False), resume=True)
    with pytest.raises(ConfigError, match="already holds a training run; continue it with --resume"):
        _run(ws3, plans, CFG)
