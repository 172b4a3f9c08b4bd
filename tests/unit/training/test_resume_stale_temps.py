"""`train --resume` removes the temporary files a killed run left in its fold folder (and validation/), nothing else."""

from __future__ import annotations

import logging

import pytest
from tiny_run_data import DATASET, make_tiny_dataset

from autoseg.log import logger
from autoseg.training.checkpoint import load_checkpoint
from autoseg.training.config import TrainConfig
from autoseg.training.trainer import train_fold
from autoseg.workspace import Workspace

CFG = dict(iterations_per_epoch=1, val_iterations_per_epoch=1, validate_at_end=False, augmentation="none")
STALE = (".checkpoint_latest.pt.k2j_x9a0.tmp", ".progress.png.abcdefgh.tmp")
STALE_VAL = (".case_000.nii.gz.x1y2z3w4.tmp.nii.gz",)


@pytest.fixture
def log_lines():
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def _train(ws, plans, epochs: int, resume: bool):
    cfg = TrainConfig(epochs=epochs, **CFG)
    return train_fold(ws, DATASET, plans, "3d_fullres", 0, cfg, device="cpu", resume=resume, num_workers=0)


def test_resume_removes_stale_temps(tmp_path, log_lines):
    ws = Workspace.at(tmp_path / "ws")
    plans = make_tiny_dataset(ws, n_cases=5)
    run_dir = _train(ws, plans, 1, resume=False).run_dir
    (run_dir / "validation").mkdir()
    for folder, names in ((run_dir, STALE), (run_dir / "validation", STALE_VAL)):
        for name in names:
            (folder / name).write_bytes(b"half-written by a killed run")
    (run_dir / "notes.tmp").write_text("mine")
    (run_dir / ".notes.tmp").write_text("mine too")
    log_lines.clear()
    result = _train(ws, plans, 1, resume=True)  # a finished run resumed: no epoch to train, cleaned all the same
    assert result.epochs_done == 1 and load_checkpoint(run_dir / "checkpoint_final.pt")["epoch"] == 1
    assert not [n for n in STALE if (run_dir / n).exists()]
    assert not (run_dir / "validation" / STALE_VAL[0]).exists()
    assert (run_dir / "notes.tmp").read_text() == "mine" and (run_dir / ".notes.tmp").read_text() == "mine too"
    assert f"{run_dir}: removed 2 stale temporary files left by an interrupted run" in log_lines
    assert f"{run_dir / 'validation'}: removed 1 stale temporary file left by an interrupted run" in log_lines
    log_lines.clear()
    (run_dir / STALE[0]).write_bytes(b"x")
    with pytest.raises(Exception, match="--resume"):  # no resume, no cleanup: the folder is refused as it is
        _train(ws, plans, 1, resume=False)
    assert (run_dir / STALE[0]).is_file() and not [line for line in log_lines if "stale" in line]
