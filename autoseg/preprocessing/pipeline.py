"""verify -> fingerprint -> plan -> preprocess, as one library call (the `autoseg plan_and_preprocess` command)."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from autoseg.data.dataset import load_dataset
from autoseg.errors import AutosegError, DatasetError
from autoseg.log import logger
from autoseg.preprocessing.preprocess import PreprocessReport, preprocess_dataset
from autoseg.workspace import Workspace


@dataclass(frozen=True)
class PipelineReport:
    dataset: str
    fingerprint_file: Path
    plans_file: Path
    configurations: tuple[str, ...]
    explanations: tuple[str, ...]
    preprocess: PreprocessReport


def _stage(module: str, attr: str, what: str):
    """An attribute of another stage's module; a clear error while that stage is not installed."""
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise AutosegError(f"the {what} stage is not available in this autoseg ({module}.{attr}: {exc})") from exc


def plan_and_preprocess(
    ws: Workspace,
    dataset: str,
    configurations: Sequence[str] | None = None,
    jobs: int = 2,
    gpu_memory_gb: float | None = None,
    preset: str | None = None,
    planner: str = "default",
    overwrite: bool = False,
) -> PipelineReport:
    """Verify the raw dataset, extract its fingerprint, plan, and preprocess the chosen configurations.

    Args:
        ws: the Workspace. dataset: id or name (resolved with ``ws.resolve``).
        configurations: plans configurations to preprocess (default: all planned ones).
        jobs: worker processes for every stage. gpu_memory_gb, preset, planner: passed to the planner.
        overwrite: recompute preprocessed cases that already exist.
    """
    name = ws.resolve(dataset)
    folder = ws.raw_dataset(name)
    report = _stage("autoseg.data.verify", "verify_dataset", "verify")(folder, jobs)
    if report.problems:
        shown = "\n".join(report.problems[:10])
        raise DatasetError(f"{folder}: {len(report.problems)} problem(s) found, fix them first:\n{shown}")
    spec = load_dataset(folder)
    fingerprint, rows = _stage("autoseg.fingerprint.extract", "extract_fingerprint", "fingerprint")(spec, jobs)
    write = _stage("autoseg.fingerprint.extract", "write_fingerprint", "fingerprint")
    write(fingerprint, rows, ws.fingerprint_file(name), ws.fingerprint_table(name))
    plan_cls = _stage("autoseg.planning.planner", "planners", "planning").get(planner)
    plans, why = plan_cls().plan(fingerprint, gpu_memory_gb=gpu_memory_gb, preset=preset)
    if plans.intensity is None:  # the "ct" normaliser needs them at inference too, where no fingerprint exists
        plans = dataclasses.replace(plans, intensity=fingerprint.intensity)
    plans_path = ws.plans_file(name, plans.name)
    plans.save(plans_path)
    logger.info(f"{name}: planned {', '.join(plans.names())}; wrote {plans_path}")
    chosen = tuple(configurations) if configurations else tuple(plans.names())
    pre = preprocess_dataset(ws, name, plans, chosen, jobs=jobs, overwrite=overwrite)
    return PipelineReport(name, ws.fingerprint_file(name), plans_path, chosen, tuple(why), pre)
