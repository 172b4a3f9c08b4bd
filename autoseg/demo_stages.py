"""The demo's settings, its stages, and the clock that times them and logs the time left (`autoseg demo`).

The estimates start from a cost model of each stage (seconds measured on a 2-core reference machine, scaled by the
settings' voxels, cases and iterations) and are rescaled by how fast this machine is: a short convolution probe
before the first stage, then the training's own epochs (the trainer calls the clock's `EpochTimer` after each).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from autoseg.errors import AutosegError, ConfigError
from autoseg.log import logger
from autoseg.training.pipelines import augmentations
from autoseg.training.progress import EpochRecord

SEED, OBLIQUE_EVERY = 2026, 4  # how the demo data is generated (part of its settings record)


class DemoError(AutosegError):
    """A stage of the demo failed; the message names the stage and the cause."""


@dataclass(frozen=True)
class DemoSettings:
    """The default: the whole pipeline in about 3 minutes on 2 CPU cores with held-out Dice above 0.9 (measured in
    docs/benchmarks.md); the small organ needs about 150 iterations before the network finds it, hence 16 x 20."""

    n_train: int = 10
    n_test: int = 4
    shape: tuple[int, int, int] = (16, 32, 32)
    spacing: tuple[float, float, float] = (2.5, 0.9, 0.9)
    epochs: int = 16
    iterations_per_epoch: int = 20
    configuration: str = "3d_fullres"
    tta: bool = True  # mirror test-time augmentation for validation and prediction
    augmentation: str = "default"  # training augmentation pipeline ("batchgenerators": the reference, for A/B runs)

    @property
    def val_iterations(self) -> int:
        """Validation iterations per epoch (pseudo-Dice)."""
        return max(2, self.iterations_per_epoch // 5)

    def __post_init__(self) -> None:
        if self.n_train < 5:
            raise ConfigError(f"demo settings: n_train={self.n_train}; fold 0 of a 5-fold split needs at least 5")
        if self.n_test < 1:
            raise ConfigError(f"demo settings: n_test={self.n_test}; evaluation needs at least 1 held-out case")
        if self.augmentation not in augmentations.names():
            known = ", ".join(augmentations.names())
            raise ConfigError(f"demo settings: augmentation {self.augmentation!r} is not registered; known: {known}")
        if self.epochs < 1 or self.iterations_per_epoch < 1:
            raise ConfigError(
                f"demo settings: epochs={self.epochs}, iterations_per_epoch={self.iterations_per_epoch}; "
                "both must be at least 1"
            )

    @classmethod
    def fast(cls) -> DemoSettings:
        """A smoke test of every stage (well under a minute on 2 cores); too short for a good Dice."""
        return cls(n_train=8, n_test=2, shape=(12, 24, 24), epochs=3, iterations_per_epoch=8, tta=False)

    def record(self) -> dict:
        """What `demo_settings.json` holds (JSON types): every setting plus the generator's fixed arguments."""
        data = {**dataclasses.asdict(self), "seed": SEED, "oblique_every": OBLIQUE_EVERY}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


@dataclass
class DemoResult:
    dataset: str
    outputs: dict[str, Path] = field(default_factory=dict)
    dice: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


STAGES = (
    "generate data",
    "verify, fingerprint, plan, preprocess",
    "train fold 0",
    "predict held-out cases",
    "evaluate",
    "overlay",
)
GENERATE, PREPROCESS, TRAIN, PREDICT, EVALUATE, OVERLAY = STAGES
_PROBE_SECONDS = 0.022  # measure_speed's convolution on the reference machine


def expected_seconds(settings: DemoSettings) -> dict[str, float]:
    """The cost model: seconds of each stage on the 2-core reference machine (docs/benchmarks.md, "autoseg demo"),
    a fixed part plus a part per million voxels (the settings' case shape) per unit of work; also "epoch" (one
    training epoch) and "validation" (the end-of-fold validation that ends the training stage)."""
    mvox = math.prod(settings.shape) / 1e6
    step = 0.03 + 22.5 * mvox  # one training step of batch 2 (forward, backward, SGD); validation steps ~ 0.35 of it
    epoch = 0.5 + step * (settings.iterations_per_epoch + 0.35 * settings.val_iterations)  # + checkpoint, plot
    case = 0.3 + 1.2 * mvox * (2**3 if settings.tta else 1)  # mirror TTA: a forward pass per subset of 3 axes
    validation = math.ceil(settings.n_train / 5) * case  # fold 0's validation cases
    return {
        GENERATE: 0.05 + 1.0 * mvox * (settings.n_train + settings.n_test),
        PREPROCESS: 0.8 + 3.0 * mvox * settings.n_train,
        TRAIN: 3.0 + settings.epochs * epoch + validation,  # start-up (network, data loaders), epochs, validation
        PREDICT: 1.0 + settings.n_test * case,
        EVALUATE: 0.05 + 0.5 * mvox * settings.n_test,
        OVERLAY: 0.2,
        "epoch": epoch,
        "validation": validation,
    }


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{seconds / 60:.1f} min"


def measure_speed(device: torch.device) -> float:
    """This machine's time for a fixed 3D convolution (forward and backward, 2 x 32 x 16 x 32 x 32 voxels, as in a
    demo training step) over the reference machine's: the speed factor before training measures its own."""
    conv = torch.nn.Conv3d(32, 32, 3, padding=1).to(device)
    x = torch.ones(2, 32, 16, 32, 32, device=device)

    def step() -> None:
        conv(x).square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # the first call sets up kernels
    t0 = time.perf_counter()
    for _ in range(5):
        step()
    return (time.perf_counter() - t0) / 5 / _PROBE_SECONDS


class StageClock:
    """Runs the stages in order, times them and logs the time left before each (and after every training epoch).

    Estimate = the cost model's seconds x this machine's speed factor: measured / modelled seconds per training
    epoch once an epoch has run in this run, before that `speed` (measure_speed: 1 = the reference machine).
    """

    def __init__(self, settings: DemoSettings, result: DemoResult, where: Path, speed: float = 1.0) -> None:
        self.settings, self.result, self.where = settings, result, where
        self.expected = expected_seconds(settings)
        self.start_speed = speed
        self.epoch_seconds: float | None = None  # mean seconds per training epoch measured in this run
        self.last_epoch_done: int | None = None  # index of the last finished epoch seen in this run

    def speed(self) -> float:
        if self.epoch_seconds is not None:
            return self.epoch_seconds / self.expected["epoch"]
        return self.start_speed

    def left(self, stage: str) -> float:
        """Estimated seconds left in `stage` (not started, or training after `last_epoch_done`)."""
        speed = self.speed()
        if stage == TRAIN and self.last_epoch_done is not None:
            epochs_left = self.settings.epochs - self.last_epoch_done - 1
            return epochs_left * self.epoch_seconds + self.expected["validation"] * speed
        return self.expected[stage] * speed

    def total_left(self, stage: str) -> float:
        """Estimated seconds left in `stage` and every stage after it."""
        return sum(self.left(s) for s in STAGES[STAGES.index(stage) :])

    def run(self, stage: str, fn: Callable[[], object]) -> object:
        """Run one stage; an error becomes one message naming the stage, the cause and what to do."""
        n = STAGES.index(stage) + 1
        logger.info(
            f"== stage {n}/{len(STAGES)} {stage}: about {_minutes(self.left(stage))} "
            f"(estimated total left about {_minutes(self.total_left(stage))})"
        )
        t0 = time.perf_counter()
        try:
            out = fn()
        except (AutosegError, OSError) as exc:
            cause = str(exc) if isinstance(exc, AutosegError) else f"{type(exc).__name__}: {exc}"
            raise DemoError(
                f"stage '{stage}' failed: {cause}\n(fix the cause and run the same command again: the data, "
                f"preprocessed cases and training run already made under {self.where} are reused)"
            ) from exc
        self.result.seconds[stage] = round(time.perf_counter() - t0, 1)
        return out

    def epoch_done(self, epoch: int, mean_seconds: float) -> None:
        self.last_epoch_done, self.epoch_seconds = epoch, mean_seconds
        logger.info(
            f"{TRAIN}: epoch {epoch + 1}/{self.settings.epochs} done ({mean_seconds:.1f} s per epoch), about "
            f"{_minutes(self.left(TRAIN))} left in training (estimated total left about "
            f"{_minutes(self.total_left(TRAIN))})"
        )

    def epoch_timer(self) -> EpochTimer:
        """The trainer's epoch listener (`train_folds(..., on_epoch=...)`) that logs the time left."""
        return EpochTimer(self)


class EpochTimer:
    """Called by the trainer after every epoch; has the clock log the time left. Seconds per epoch = wall time since
    the first epoch seen in this run began / epochs seen, so checkpoint writing is counted and the run's start-up
    (network, data loaders) is not."""

    def __init__(self, clock: StageClock) -> None:
        self.clock = clock
        self.started: float | None = None
        self.seen = 0

    def __call__(self, epoch: int, record: EpochRecord) -> None:
        now = time.perf_counter()
        if self.started is None:
            self.started = now - record.seconds
        self.seen += 1
        self.clock.epoch_done(epoch, (now - self.started) / self.seen)


# ---- checks before the first stage -----------------------------------------------------------------------------
