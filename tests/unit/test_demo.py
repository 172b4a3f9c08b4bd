"""End to end on tiny data: every stage of `autoseg demo` runs and leaves its outputs in place; the time left it
logs per stage and per training epoch."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import autoseg.demo_stages as demo_stages
from autoseg.data.image_io import read_file
from autoseg.demo import DEMO_DATASET, run_demo
from autoseg.demo_stages import (
    EVALUATE,
    GENERATE,
    OVERLAY,
    PREDICT,
    STAGES,
    TRAIN,
    DemoResult,
    DemoSettings,
    StageClock,
    expected_seconds,
)
from autoseg.training.progress import EpochRecord


def test_demo_end_to_end_tiny(workspace, autoseg_log):
    settings = DemoSettings(n_train=5, n_test=2, shape=(12, 24, 24), epochs=2, iterations_per_epoch=3, tta=False)
    result = run_demo(workspace, settings, device="cpu")
    assert list(result.seconds) == list(STAGES)
    for n, stage in enumerate(STAGES, 1):
        assert re.search(
            rf"== stage {n}/6 {stage}: about \d+(\.\d)? (s|min) \(estimated total left about ", autoseg_log.text
        )
    assert re.search(
        r"train fold 0: epoch 1/2 done \(\d+\.\d s per epoch\), about .* left in training", autoseg_log.text
    )
    assert "train fold 0: epoch 2/2 done" in autoseg_log.text
    assert set(result.dice) == {"organ1 (large, bright)", "organ2 (small, dark)"}
    assert all(0.0 <= d <= 1.0 for d in result.dice.values())
    for what in ("plans", "training log", "progress plot", "metrics", "overlay"):
        assert result.outputs[what].is_file(), what
    assert result.outputs["overlay"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(result.outputs["metrics"].read_text())
    assert summary["num_cases"] == 2
    # predictions carry exactly the input geometry (one test case is oblique: every 4th case)
    for img in sorted((result.outputs["raw dataset"] / "imagesTs").iterdir()):
        case = img.name.replace("_0000.nii.gz", "")
        pred, pgeo = read_file(result.outputs["predictions"] / f"{case}.nii.gz")
        ref, rgeo = read_file(img)
        assert pred.shape == ref.shape and pgeo.matches(rgeo) == []
        assert set(np.unique(pred)) <= {0, 1, 2}
    assert (
        workspace.results / result.dataset / "default" / "3d_fullres" / "default" / "fold_0" / "checkpoint_final.pt"
    ).is_file()


def _record(epoch: int, seconds: float) -> EpochRecord:
    return EpochRecord(epoch, 0.5, 0.4, (0.9, 0.8), 0.85, 0.01, seconds, 0.1)


def test_the_estimates_follow_the_measured_speed(autoseg_log):
    settings = DemoSettings()
    model = expected_seconds(settings)
    clock = StageClock(settings, DemoResult(DEMO_DATASET), Path("ws"), speed=3.0)  # 3x slower than the reference
    assert clock.speed() == 3.0
    assert clock.total_left(GENERATE) == pytest.approx(3 * sum(model[s] for s in STAGES))
    assert clock.left(TRAIN) == pytest.approx(3 * model[TRAIN])
    clock.epoch_done(1, 2 * model["epoch"])  # two epochs run: this machine takes twice the model's time
    assert clock.speed() == pytest.approx(2.0)
    train_left = (settings.epochs - 2) * 2 * model["epoch"] + 2 * model["validation"]
    assert clock.left(TRAIN) == pytest.approx(train_left)
    assert clock.total_left(TRAIN) == pytest.approx(
        train_left + 2 * sum(model[s] for s in (PREDICT, EVALUATE, OVERLAY))
    )
    assert f"train fold 0: epoch 2/{settings.epochs} done ({2 * model['epoch']:.1f} s per epoch)" in autoseg_log.text


def test_the_speed_probe_is_a_factor_near_1_on_the_reference_machine():
    speed = demo_stages.measure_speed(torch.device("cpu"))
    assert 0.01 < speed < 100  # a busy or a much faster machine moves it; a wrong unit would be off by 1000


def test_the_training_stage_times_the_trainers_epochs(autoseg_log, monkeypatch):
    settings = DemoSettings(epochs=4)
    clock = StageClock(settings, DemoResult(DEMO_DATASET), Path("ws"))
    now = iter([100.0, 130.0, 150.0, 160.0])  # stage start, epoch 1 done, epoch 2 done, stage end
    monkeypatch.setattr(demo_stages, "time", SimpleNamespace(perf_counter=lambda: next(now)))
    timer = clock.epoch_timer()

    def train():
        timer(1, _record(1, 20.0))  # a resumed run: epoch 0 ran before; this one began at 110
        timer(2, _record(2, 18.0))
        return "trained"

    assert clock.run(TRAIN, train) == "trained"
    assert "== stage 3/6 train fold 0: about" in autoseg_log.text
    assert "train fold 0: epoch 2/4 done (20.0 s per epoch)" in autoseg_log.text  # 130 - 110
    assert "train fold 0: epoch 3/4 done (20.0 s per epoch)" in autoseg_log.text  # (150 - 110) / 2
    assert clock.last_epoch_done == 2 and clock.epoch_seconds == 20.0
    assert clock.result.seconds[TRAIN] == 60.0
