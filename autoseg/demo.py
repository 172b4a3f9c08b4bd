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

import os
import shutil
import tempfile
from pathlib import Path

from autoseg.data import synthetic
from autoseg.data.image_io import read_image, read_label
from autoseg.demo_stages import (
    EVALUATE,
    GENERATE,
    OBLIQUE_EVERY,
    OVERLAY,
    PREDICT,
    PREPROCESS,
    SEED,
    TRAIN,
    DemoResult,
    DemoSettings,
    StageClock,
    measure_speed,
)
from autoseg.device import resolve_device
from autoseg.errors import ConfigError, WorkspaceError
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
        oblique_every=OBLIQUE_EVERY,
        seed=SEED,
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


def run_demo(ws: Workspace, settings: DemoSettings | None = None, device: str | None = None) -> DemoResult:
    """Run every stage on the demo dataset (`settings`: default `DemoSettings()`); returns Dice per organ on the
    held-out cases and output paths."""
    settings = DemoSettings() if settings is None else settings
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
        "augmentation": settings.augmentation,
    }
    run_dir = ws.run_dir(name, "default", cfg, "default", 0)
    resume = (run_dir / "checkpoint_latest.pt").is_file()
    if resume:
        logger.info(f"{run_dir}: reusing the training run of an earlier demo (continuing it if it was interrupted)")
    train = training.train_folds
    timer = clock.epoch_timer()  # logs the time left after every epoch
    (fold,) = clock.run(
        TRAIN,
        lambda: train(ws, name, [cfg], folds=[0], overrides=overrides, device=device, resume=resume, on_epoch=timer),
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
