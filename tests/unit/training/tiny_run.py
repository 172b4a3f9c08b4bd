"""A tiny training run shared by the trainer, resume and DDP tests: a workspace holding the tiny preprocessed dataset
(tiny_run_data.py), and the settings of a short CPU run on it, in-process (`quick_config`) or via the CLI
(`train_args`)."""

from __future__ import annotations

from pathlib import Path

from tiny_run_data import make_tiny_dataset

from autoseg.planning.plans import Plans
from autoseg.training.config import TrainConfig
from autoseg.workspace import Workspace


def tiny_workspace(root: Path) -> tuple[Workspace, Plans]:
    """A workspace at `root` holding the tiny dataset, planned and preprocessed; returns it and its plans."""
    ws = Workspace.at(root)
    return ws, make_tiny_dataset(ws)


def quick_settings(epochs: int, iterations: int) -> dict:
    """`iterations` training iterations per epoch, one validation iteration, no validation at the end of the fold."""
    return dict(epochs=epochs, iterations_per_epoch=iterations, val_iterations_per_epoch=1, validate_at_end=False)


def quick_config(epochs: int = 2, iterations: int = 2) -> TrainConfig:
    return TrainConfig(**quick_settings(epochs, iterations))


def train_args(
    ws: Workspace,
    *extra: str,
    fold: int = 0,
    configuration: str | None = "3d_fullres",
    epochs: int = 2,
    iterations: int = 2,
) -> list[str]:
    """`autoseg train` arguments (no program name) for the quick run on CPU without loader workers, then `extra`;
    `configuration=None` leaves -c out (every configuration of the plans)."""
    args = ["train", "-d", "990", "-f", str(fold), "--workspace", str(ws.root), "--device", "cpu", "-j", "0"]
    if configuration is not None:
        args += ["-c", configuration]
    for name, value in quick_settings(epochs, iterations).items():
        args += ["--set", f"{name}={str(value).lower() if isinstance(value, bool) else value}"]
    return [*args, *extra]
