import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from tiny_run import quick_config, train_args
from tiny_run_data import DATASET

from autoseg.cli.main import main
from autoseg.errors import ConfigError
from autoseg.training.checkpoint import load_checkpoint
from autoseg.training.config import TrainConfig
from autoseg.training.optim import poly_lr
from autoseg.training.trainer import Trainer, train_fold, trainers

QUICK = quick_config(epochs=2)


def test_poly_lr():
    assert poly_lr(0.01, 0, 1000) == 0.01
    assert poly_lr(0.01, 500, 1000) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 1000, 1000) == 0.0


def test_run_folder_contents(tiny):
    ws, plans = tiny
    result = train_fold(ws, DATASET, plans, "3d_fullres", 1, QUICK, device="cpu", num_workers=0)
    run = ws.run_dir(DATASET, "default", "3d_fullres", "default", 1)
    assert result.run_dir == run and result.epochs_done == 2
    names = {p.name for p in run.iterdir()}
    assert names == {
        "train_config.json",
        "plans.json",
        "log.txt",
        "progress.csv",
        "progress.png",
        "checkpoint_latest.pt",
        "checkpoint_best.pt",
        "checkpoint_final.pt",
    }
    assert json.loads((run / "train_config.json").read_text())["epochs"] == 2
    assert json.loads((run / "plans.json").read_text())["name"] == "default"
    lines = (run / "log.txt").read_text().splitlines()
    assert lines[0].startswith("# Dataset990_Tiny plans=default configuration=3d_fullres trainer=default fold=1")
    assert lines[1].startswith("epoch    0  train_loss ") and "pseudo_dice [1:" in lines[1] and " 2:" in lines[1]
    assert "lr 0.010000" in lines[1] and "data_wait" in lines[1]
    rows = list(csv.DictReader((run / "progress.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert set(rows[0]) >= {"train_loss", "val_loss", "dice_1", "dice_2", "ema_dice", "lr", "seconds", "data_seconds"}
    assert float(rows[1]["lr"]) == pytest.approx(poly_lr(0.01, 1, 2))
    assert 0 <= float(rows[0]["data_seconds"]) <= float(rows[0]["seconds"])
    assert (run / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = load_checkpoint(run / "checkpoint_final.pt")
    splits = json.loads(ws.splits_file(DATASET).read_text())
    assert ckpt["train_config"]["epochs"] == 2 and ckpt["plans_name"] == "default" and ckpt["fold"] == 1
    assert len(splits) == 5 and sorted(splits[1]["val"] + splits[1]["train"]) == [f"case_{i:03d}" for i in range(6)]
    ema = ckpt["curves"]["ema_dice"]
    dice1 = np.nanmean(ckpt["curves"]["dice"][1])
    assert ema[1] == pytest.approx(0.9 * ema[0] + 0.1 * dice1)
    assert ckpt["best_ema_dice"] == max(ema)


def test_loss_decreases_when_overfitting(tiny):
    ws, plans = tiny
    cfg = TrainConfig(
        epochs=8,
        iterations_per_epoch=4,
        val_iterations_per_epoch=1,
        augmentation="none",
        validate_at_end=False,
        lr=0.02,
    )
    result = train_fold(ws, DATASET, plans, "3d_fullres", "all", cfg, device="cpu", num_workers=0)
    curves = load_checkpoint(result.final_checkpoint)["curves"]
    assert np.mean(curves["train_loss"][-2:]) < 0.3 * np.mean(curves["train_loss"][:2])
    assert np.mean(curves["val_loss"][-2:]) < 0.3 * np.mean(curves["val_loss"][:2])


def test_custom_trainer_overrides_one_build_method(tiny):
    ws, plans = tiny
    import torch

    @trainers.register("adam_for_test")
    class AdamTrainer(Trainer):
        def build_optimizer(self, model):
            return torch.optim.Adam(model.parameters(), lr=1e-3)

    try:
        result = train_fold(
            ws, DATASET, plans, "3d_fullres", 2, QUICK, trainer="adam_for_test", device="cpu", num_workers=0
        )
    finally:
        trainers.unregister("adam_for_test")
    assert "adam_for_test" in str(result.run_dir)
    assert "exp_avg" in next(iter(load_checkpoint(result.final_checkpoint)["optimizer"]["state"].values()))
    with pytest.raises(ConfigError, match="unknown trainer 'nope'"):
        train_fold(ws, DATASET, plans, "3d_fullres", 3, QUICK, trainer="nope", device="cpu")


def test_cli_set_errors_and_help(tiny, capsys):
    ws, _ = tiny
    base = ["train", "-d", "990", "-f", "0", "--workspace", str(ws.root), "--device", "cpu"]
    assert main([*base, "--set", "epoch=3"]) == 1
    err = capsys.readouterr().err
    assert "autoseg train: error: unknown training setting 'epoch'; valid names: epochs, iterations_per_epoch" in err
    assert main([*base, "--set", "lr=fast"]) == 1
    assert "lr='fast' must be of type float" in capsys.readouterr().err
    assert main([*base, "-f", "7"]) == 1
    assert "fold 7 does not exist: splits.json has 5 folds" in capsys.readouterr().err
    assert main([*base, "-c", "3d_lowres"]) == 1
    assert "have no configuration '3d_lowres'; available: 3d_fullres, 2d" in capsys.readouterr().err
    out = subprocess.run([sys.executable, "-m", "autoseg", "train", "--help"], capture_output=True, text=True)
    assert "--resume" in out.stdout and "--group-by" in out.stdout and "3d_cascade_fullres" in out.stdout


def test_cli_trains_a_fold(tiny, capsys):
    ws, _ = tiny
    args = train_args(ws, fold=4, configuration=None, epochs=1, iterations=1)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("fold 4: 1 epochs, best EMA pseudo-Dice") == 2  # -c defaults to every configuration
    assert "3d_fullres/default/fold_4" in out and "2d/default/fold_4" in out
    assert main(args) == 1
    assert "already holds a training run; continue it with --resume" in capsys.readouterr().err


@pytest.mark.parametrize("configuration", ["3d_fullres", "2d"])
def test_end_of_fold_validation(tiny, configuration):
    from autoseg.data.image_io import read_label

    ws, plans = tiny
    cfg = TrainConfig(epochs=1, iterations_per_epoch=2, val_iterations_per_epoch=1, val_tta=False)
    result = train_fold(ws, DATASET, plans, configuration, 3, cfg, device="cpu", num_workers=0)
    val_dir = result.run_dir / "validation"
    val_ids = json.loads(ws.splits_file(DATASET).read_text())[3]["val"]
    assert sorted(p.name for p in val_dir.glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in val_ids)
    for cid in val_ids:
        pred, geo = read_label(val_dir / f"{cid}.nii.gz")
        ref, ref_geo = read_label(ws.gt_folder(DATASET) / f"{cid}.nii.gz")
        assert pred.shape == ref.shape and not geo.matches(ref_geo)
        with np.load(val_dir / f"{cid}.npz") as z:
            probs = z["probabilities"]
        assert probs.dtype == np.float16 and probs.shape == (3, *ref.shape)
        assert np.allclose(probs.astype(np.float32).sum(0), 1, atol=1e-2)
        assert np.mean(probs.argmax(0) == pred) > 0.99  # float16 rounding may break near-ties
    summary = json.loads((val_dir / "summary.json").read_text())
    assert summary["num_cases"] == len(val_ids) and 0 <= summary["mean_dice"] <= 1
    assert result.validation["mean_dice"] == pytest.approx(summary["mean_dice"])
    rows = list(csv.DictReader((val_dir / "metrics_per_case.csv").open()))
    assert {r["case"] for r in rows} == set(val_ids)
