"""`autoseg demo`: the whole pipeline on a generated CT-like dataset, small enough for a laptop CPU.

Stages: generate data -> verify -> fingerprint -> plan -> preprocess -> train (fold 0, short schedule) ->
predict the held-out cases -> evaluate. Each stage calls the same public function as its CLI command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from autoseg.log import logger
from autoseg.workspace import Workspace

DEMO_ID = 990
DEMO_NAME = "DemoCT"


@dataclass(frozen=True)
class DemoSettings:
    n_train: int = 12
    n_test: int = 4
    shape: tuple[int, int, int] = (24, 48, 48)
    spacing: tuple[float, float, float] = (2.5, 0.9, 0.9)
    epochs: int = 15
    iterations_per_epoch: int = 20
    configuration: str = "3d_fullres"
    tta: bool = True  # mirror test-time augmentation for validation and prediction

    @classmethod
    def fast(cls) -> DemoSettings:
        """A smoke test of every stage (about a minute on 2 cores); too short for a good Dice."""
        return cls(n_train=8, n_test=2, shape=(20, 40, 40), epochs=3, iterations_per_epoch=8, tta=False)


@dataclass
class DemoResult:
    dataset: str
    outputs: dict[str, Path] = field(default_factory=dict)
    dice: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _timed(result: DemoResult, stage: str, fn: Callable[[], object]) -> object:
    logger.info(f"== {stage}")
    t0 = time.perf_counter()
    out = fn()
    result.seconds[stage] = round(time.perf_counter() - t0, 1)
    return out


def generate(ws: Workspace, settings: DemoSettings, reference: Path) -> Path:
    """Write the demo dataset under ws.raw and the held-out labels to `reference` (skipped when present)."""
    from autoseg.data.synthetic import make_synthetic_dataset

    folder = ws.raw / f"Dataset{DEMO_ID:03d}_{DEMO_NAME}"
    if (folder / "dataset.json").is_file() and reference.is_dir():
        return folder
    reference.mkdir(parents=True, exist_ok=True)
    tmp = ws.raw / f".Dataset{DEMO_ID:03d}_{DEMO_NAME}.tmp"
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    made = make_synthetic_dataset(
        tmp,
        DEMO_ID,
        DEMO_NAME,
        n_cases=settings.n_train,
        n_test=settings.n_test,
        shape=settings.shape,
        spacing=settings.spacing,
        n_labels=2,
        ct=True,
        oblique_every=4,
        seed=2026,
        test_labels_dir=reference,
    )
    made.rename(folder)
    tmp.rmdir()
    return folder


def run_demo(ws: Workspace, settings: DemoSettings = DemoSettings(), device: str | None = None) -> DemoResult:
    """Run every stage on the demo dataset; returns Dice per organ on the held-out cases and output paths."""
    from autoseg.evaluation.metrics import evaluate_folder, save_evaluation
    from autoseg.inference.predictor import run_predict
    from autoseg.preprocessing.pipeline import plan_and_preprocess
    from autoseg.training.run import train_folds

    name = f"Dataset{DEMO_ID:03d}_{DEMO_NAME}"
    result = DemoResult(name)
    reference = ws.root / "demo" / "reference_labels"
    folder = _timed(result, "generate data", lambda: generate(ws, settings, reference))
    cfg = settings.configuration
    report = _timed(
        result,
        "verify, fingerprint, plan, preprocess",
        lambda: plan_and_preprocess(ws, name, configurations=[cfg], jobs=2),
    )
    overrides = {
        "epochs": settings.epochs,
        "iterations_per_epoch": settings.iterations_per_epoch,
        "val_iterations_per_epoch": max(2, settings.iterations_per_epoch // 5),
        "val_tta": settings.tta,
    }
    (fold,) = _timed(
        result, "train fold 0", lambda: train_folds(ws, name, [cfg], folds=[0], overrides=overrides, device=device)
    )
    pred_dir = ws.root / "demo" / "predictions"
    _timed(
        result,
        "predict held-out cases",
        lambda: run_predict(
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
    df, summary = _timed(
        result, "evaluate", lambda: evaluate_folder(reference, pred_dir, spec_labels, ".nii.gz", jobs=1)
    )
    _, summary_path = save_evaluation(df, summary, ws.root / "demo")
    overlay = _timed(result, "overlay", lambda: _overlay_first(folder, reference, pred_dir, ws.root / "demo"))
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
    from autoseg.data.image_io import read_image, read_label
    from autoseg.evaluation.overlay import render_case
    from autoseg.serialization import atomic_write_bytes

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
