"""`autoseg demo`: the whole pipeline on a generated CT-like dataset, small enough for a laptop CPU.

Stages: generate data -> verify -> fingerprint -> plan -> preprocess -> train (fold 0, short schedule) ->
predict the held-out cases -> evaluate. Each stage calls the same public function as its CLI command.

Before the first stage the demo checks what would otherwise fail late: the device, that the workspace folders can
be written, and that a demo dataset already in the workspace was made with the same settings (its preprocessed
cases and model would not match other data). Running the demo again reuses the data, the preprocessed cases and
the training run (an interrupted training continues from its last epoch).

Before each stage the demo logs how long it should take and how long the whole demo has left; training adds the
same after every epoch. The estimates are a cost model of each stage (seconds on a 2-core reference machine, scaled
by the settings' voxels, cases and iterations) times this machine's speed, measured at run time: first by a
fraction of a second of 3D convolutions before the first stage, then by the training's own epochs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from autoseg.data import synthetic
from autoseg.data.image_io import read_image, read_label
from autoseg.device import resolve_device
from autoseg.errors import AutosegError, ConfigError, WorkspaceError
from autoseg.evaluation import metrics
from autoseg.evaluation.overlay import render_case
from autoseg.inference import predictor
from autoseg.log import logger
from autoseg.preprocessing import pipeline
from autoseg.serialization import atomic_write_bytes, load_json, save_json
from autoseg.training import run as training
from autoseg.workspace import Workspace

DEMO_ID = 990
DEMO_NAME = "DemoCT"
DEMO_DATASET = f"Dataset{DEMO_ID:03d}_{DEMO_NAME}"
SETTINGS_FILE = "demo_settings.json"  # in the raw dataset folder: the settings the demo data and model were made with
_SEED, _OBLIQUE_EVERY = 2026, 4


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

    @property
    def val_iterations(self) -> int:
        """Validation iterations per epoch (pseudo-Dice)."""
        return max(2, self.iterations_per_epoch // 5)

    def __post_init__(self) -> None:
        if self.n_train < 5:
            raise ConfigError(f"demo settings: n_train={self.n_train}; fold 0 of a 5-fold split needs at least 5")
        if self.n_test < 1:
            raise ConfigError(f"demo settings: n_test={self.n_test}; evaluation needs at least 1 held-out case")
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
        data = {**dataclasses.asdict(self), "seed": _SEED, "oblique_every": _OBLIQUE_EVERY}
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
        watcher = _EpochWatcher(self) if stage == TRAIN else None
        if watcher is not None:
            logger.addHandler(watcher)
        try:
            out = fn()
        except (AutosegError, OSError) as exc:
            cause = str(exc) if isinstance(exc, AutosegError) else f"{type(exc).__name__}: {exc}"
            raise DemoError(
                f"stage '{stage}' failed: {cause}\n(fix the cause and run the same command again: the data, "
                f"preprocessed cases and training run already made under {self.where} are reused)"
            ) from exc
        finally:
            if watcher is not None:
                logger.removeHandler(watcher)
        self.result.seconds[stage] = round(time.perf_counter() - t0, 1)
        return out

    def epoch_done(self, epoch: int, mean_seconds: float) -> None:
        self.last_epoch_done, self.epoch_seconds = epoch, mean_seconds
        logger.info(
            f"{TRAIN}: epoch {epoch + 1}/{self.settings.epochs} done ({mean_seconds:.1f} s per epoch), about "
            f"{_minutes(self.left(TRAIN))} left in training (estimated total left about "
            f"{_minutes(self.total_left(TRAIN))})"
        )


_EPOCH_LINE = re.compile(r"epoch\s+(\d+)\s.*\s(\d+(?:\.\d+)?)s\s+data_wait")  # the trainer's line per epoch


class _EpochWatcher(logging.Handler):
    """Sees the trainer's per-epoch log line (autoseg.training.progress.format_line) and has the clock log the time
    left. Seconds per epoch = wall time since the first epoch seen in this run began / epochs seen, so checkpoint
    writing is counted and the run's start-up (network, data loaders) is not."""

    def __init__(self, clock: StageClock) -> None:
        super().__init__(logging.INFO)
        self.clock = clock
        self.started: float | None = None
        self.seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        match = _EPOCH_LINE.match(record.getMessage())
        if match is None:
            return
        now = time.perf_counter()
        if self.started is None:
            self.started = now - float(match.group(2))
        self.seen += 1
        self.clock.epoch_done(int(match.group(1)), (now - self.started) / self.seen)


# ---- checks before the first stage -----------------------------------------------------------------------------
def check_device(device: str | None) -> None:
    """`None` (CUDA when available), `cpu` or `cuda[:N]`; CUDA must be present when asked for."""
    if device is not None and device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device {device!r}: the demo runs on cpu or cuda")
    resolve_device(device)


def check_workspace(ws: Workspace) -> None:
    """Create the workspace folders the demo writes and prove each is writable (a file in the way, no permission,
    a read-only disk: one message naming the folder)."""
    for folder in dict.fromkeys((ws.root, ws.raw, ws.preprocessed, ws.results, ws.root / "demo")):
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise WorkspaceError(
                f"workspace folder {folder} cannot be created: {blocker} is a file, not a folder; pass --workspace "
                "with the path of a folder (new or existing), or move the file away"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".autoseg_write_test.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise WorkspaceError(
                f"workspace folder {folder} is not writable ({exc.strerror or exc}); choose a writable folder with "
                "--workspace (or AUTOSEG_HOME), or fix its permissions"
            ) from exc


def _describe(record: dict) -> str:
    for cmd, preset in (("autoseg demo --fast", DemoSettings.fast()), ("autoseg demo", DemoSettings())):
        if record == preset.record():
            return f"the settings of `{cmd}`"
    return "settings " + ", ".join(f"{k}={v}" for k, v in record.items())


def existing_dataset(ws: Workspace, settings: DemoSettings) -> bool:
    """Whether the workspace already holds the demo dataset made with `settings` (reuse it); raises WorkspaceError
    when it holds one made otherwise, a folder the demo did not make, or demo results without their data."""
    folder = ws.raw / DEMO_DATASET
    others = [p for p in (ws.preprocessed / DEMO_DATASET, ws.results / DEMO_DATASET, ws.root / "demo") if p.exists()]
    remove = " and ".join(str(p) for p in [folder, *others] if p.exists())
    fresh = "run the demo in another workspace (--workspace NEW_FOLDER)"
    if not folder.exists():
        derived = [p for p in others if p.name == DEMO_DATASET]
        if derived:
            raise WorkspaceError(
                f"the demo dataset {folder} is missing but its preprocessed data or models are still in "
                f"{', '.join(map(str, derived))}; the demo will not mix them with newly generated data: delete "
                f"{remove}, or {fresh}"
            )
        return False
    stamp = folder / SETTINGS_FILE
    if not folder.is_dir() or not stamp.is_file() or not (folder / "dataset.json").is_file():
        missing = SETTINGS_FILE if folder.is_dir() and not stamp.is_file() else "dataset.json"
        raise WorkspaceError(
            f"{folder} exists but was not made by this version of `autoseg demo` or is incomplete ({missing} is "
            f"missing); delete {remove}, or {fresh}"
        )
    try:
        recorded = load_json(stamp)
    except ValueError as exc:
        raise WorkspaceError(f"{exc}; delete {remove}, or {fresh}") from exc
    if recorded != settings.record():
        shown = _describe(recorded) if isinstance(recorded, dict) else repr(recorded)
        raise WorkspaceError(
            f"{folder} holds the demo dataset made with {shown}, but this run uses {_describe(settings.record())}; "
            f"their data and models cannot share a workspace: {fresh}, or delete {remove}"
        )
    return True


# ---- stages ----------------------------------------------------------------------------------------------------
def generate(ws: Workspace, settings: DemoSettings, reference: Path) -> Path:
    """Write the demo dataset under ws.raw and the held-out labels to `reference` (reused when already made with
    the same settings; made in a hidden folder and moved into place, so a killed run leaves nothing half-written)."""
    folder = ws.raw / DEMO_DATASET
    reuse = existing_dataset(ws, settings)
    tmp = ws.raw / f".{DEMO_DATASET}.tmp"
    if reuse and len(list(reference.glob("*.nii.gz"))) == settings.n_test:
        if tmp.exists():
            shutil.rmtree(tmp)
        return folder
    if tmp.exists():
        logger.info(f"removing {tmp}, left by an interrupted demo")
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    made = synthetic.make_synthetic_dataset(
        tmp,
        DEMO_ID,
        DEMO_NAME,
        n_cases=settings.n_train,
        n_test=settings.n_test,
        shape=settings.shape,
        spacing=settings.spacing,
        n_labels=2,
        ct=True,
        oblique_every=_OBLIQUE_EVERY,
        seed=_SEED,
        test_labels_dir=tmp / "reference_labels",
    )
    save_json(made / SETTINGS_FILE, settings.record())
    if reference.exists():
        shutil.rmtree(reference)
    reference.parent.mkdir(parents=True, exist_ok=True)
    (tmp / "reference_labels").rename(reference)
    if not reuse:
        made.rename(folder)
    shutil.rmtree(tmp)
    return folder


def run_demo(ws: Workspace, settings: DemoSettings = DemoSettings(), device: str | None = None) -> DemoResult:
    """Run every stage on the demo dataset; returns Dice per organ on the held-out cases and output paths."""
    check_device(device)
    check_workspace(ws)
    existing_dataset(ws, settings)
    name = DEMO_DATASET
    result = DemoResult(name)
    clock = StageClock(settings, result, ws.root, measure_speed(resolve_device(device)))
    demo_dir = ws.root / "demo"
    reference = demo_dir / "reference_labels"
    folder = clock.run(GENERATE, lambda: generate(ws, settings, reference))
    cfg = settings.configuration
    report = clock.run(PREPROCESS, lambda: pipeline.plan_and_preprocess(ws, name, configurations=[cfg], jobs=2))
    overrides = {
        "epochs": settings.epochs,
        "iterations_per_epoch": settings.iterations_per_epoch,
        "val_iterations_per_epoch": settings.val_iterations,
        "val_tta": settings.tta,
    }
    run_dir = ws.run_dir(name, "default", cfg, "default", 0)
    resume = (run_dir / "checkpoint_latest.pt").is_file()
    if resume:
        logger.info(f"{run_dir}: reusing the training run of an earlier demo (continuing it if it was interrupted)")
    train = training.train_folds
    (fold,) = clock.run(
        TRAIN, lambda: train(ws, name, [cfg], folds=[0], overrides=overrides, device=device, resume=resume)
    )
    pred_dir = demo_dir / "predictions"
    clock.run(
        PREDICT,
        lambda: predictor.run_predict(
            ws,
            folder / "imagesTs",
            pred_dir,
            dataset=name,
            configuration=cfg,
            folds=[0],
            device=device,
            tta=settings.tta,
        ),
    )
    spec_labels = [1, 2]

    def evaluate() -> tuple[dict, Path]:
        df, summary = metrics.evaluate_folder(reference, pred_dir, spec_labels, ".nii.gz", jobs=1)
        return summary, metrics.save_evaluation(df, summary, demo_dir)[1]

    summary, summary_path = clock.run(EVALUATE, evaluate)
    overlay = clock.run(OVERLAY, lambda: _overlay_first(folder, reference, pred_dir, demo_dir))
    organ = {1: "organ1 (large, bright)", 2: "organ2 (small, dark)"}
    result.dice = {organ[lab]: float(summary["mean"][str(lab)]["dice"]) for lab in spec_labels}
    result.outputs = {
        "raw dataset": folder,
        "plans": report.plans_file,
        "training log": fold.run_dir / "log.txt",
        "progress plot": fold.run_dir / "progress.png",
        "predictions": pred_dir,
        "metrics": summary_path,
        "overlay": overlay,
    }
    return result


def _overlay_first(folder: Path, reference: Path, pred_dir: Path, out: Path) -> Path:
    """Overlay PNG of the first held-out case: reference contours solid, prediction dashed."""
    first = sorted(reference.iterdir())[0]
    cid = first.name[: -len(".nii.gz")]
    image, geometry = read_image([folder / "imagesTs" / f"{cid}_0000.nii.gz"])
    png = render_case(
        image,
        geometry,
        read_label(first)[0],
        read_label(pred_dir / first.name)[0],
        {1: "organ1", 2: "organ2"},
        f"demo {cid}: reference solid, prediction dashed",
    )
    return atomic_write_bytes(out / f"overlay_{cid}.png", png)
