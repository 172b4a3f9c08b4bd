"""Export of predicted cases, overlapped with the network work of the next case (as nnU-Net's export processes).

The network part of a prediction (preprocess, sliding window, softmax) runs in the main process; what follows it is
an `ExportJob`: per configuration the softmax probabilities in the preprocessed grid, the case properties and the
configuration, plus where the result goes. `export_case` resamples every member back to the raw image grid, averages
them (ensemble), takes the argmax (regions: `LabelScheme.to_labels`), postprocesses, writes the ``.npz`` (optional)
and the label file (both atomic; the job's `writer` when it has one, such as a DICOM-SEG) and computes the case's
statistics rows (optional).

`Exporter` runs the jobs in the calling process (one worker: the simple sequential path) or in a small pool of
worker processes while the main process goes on with the next case. At most workers + 1 jobs are in flight, so host
memory stays bounded; `export_workers` sizes the pool from the largest input case (`autoseg.resources`). A job that
fails stops the run with the same AutosegError naming the case on both paths; jobs already running are finished
(their outputs are complete files), queued ones are cancelled.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from joblib.externals.loky import ProcessPoolExecutor

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import write_label
from autoseg.data.labels import LabelScheme
from autoseg.data.probabilities import probabilities_to_labels, save_probabilities
from autoseg.data.workers import largest_case
from autoseg.errors import AutosegError, ImageIOError
from autoseg.evaluation.postprocess import apply_postprocessing
from autoseg.evaluation.statistics import case_statistics
from autoseg.inference.export import NetworkOutput, restore_probabilities, restored_argmax
from autoseg.planning.plans import Configuration
from autoseg.preprocessing.preprocess import target_spacing
from autoseg.resources import COPIES, case_bytes, choose_workers, describe, usable_cores

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # per worker: cores / (workers + 1)


def thread_budget() -> int:
    """Threads one export may use: what the Exporter gave its pool worker (OMP_NUM_THREADS), else the usable cores."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return usable_cores()


IDLE_TIMEOUT_S = 20  # idle export workers exit after this long (also after a killed run)


@dataclass
class ExportJob:
    """What the network produced for one case and where it goes."""

    case_id: str
    members: list[NetworkOutput]  # one per configuration (ensemble member)
    geometry: Geometry  # of the input image: the output keeps it
    target: Path  # label file
    npz: Path | None = None  # probabilities file (--save-probabilities)
    postprocessing: Sequence[Sequence[int]] = ()
    image: np.ndarray | None = None  # (C, Z, Y, X) input intensities: statistics rows are computed when given
    label_names: dict = field(default_factory=dict)  # {value: name} of the written label map (scheme.written_names)
    channel_names: Sequence[str] | None = None
    parent_pid: int | None = None  # set for a pool worker: the predict process, which must still be alive
    # writes the label map instead of `write_label`: (target, labels, geometry) -> path (e.g. a DICOM-SEG writer)
    writer: Callable[[Path, np.ndarray, Geometry], Path] | None = None
    scheme: LabelScheme | None = None  # regions: sigmoid probabilities -> labels via regions_class_order (else argmax)


@dataclass
class ExportResult:
    case_id: str
    path: Path
    rows: list  # statistics rows (empty without an image)
    seconds: float


def export_case(job: ExportJob) -> ExportResult:
    """Raw-grid probabilities -> labels -> postprocessing -> files; input and memory errors become an AutosegError
    naming the case (with its cause chained); anything else is a bug and propagates as it is."""
    start = time.perf_counter()
    if job.parent_pid is not None and os.getppid() != job.parent_pid:  # killed: write nothing more for it
        raise ImageIOError(f"case {job.case_id!r}: not exported, the predict process that queued it has ended")
    try:
        path, rows = _export(job)
    except AutosegError as exc:
        if job.case_id in str(exc):
            raise
        raise type(exc)(f"case {job.case_id!r}: {exc}") from exc
    except MemoryError as exc:
        raise ImageIOError(
            f"case {job.case_id!r}: out of memory while exporting {job.target}; use fewer export workers (-j 1)"
        ) from exc
    except OSError as exc:  # disk full, permissions, a vanished output folder
        raise ImageIOError(
            f"case {job.case_id!r}: exporting {job.target} failed ({type(exc).__name__}: {str(exc)[:300]})"
        ) from exc
    return ExportResult(job.case_id, path, rows, time.perf_counter() - start)


def _export(job: ExportJob) -> tuple[Path, list]:
    if job.npz is None and (job.scheme is None or not job.scheme.has_regions):  # labels only: a class at a time
        labels = restored_argmax(job.members, thread_budget())
        return _write(job, apply_postprocessing(labels, job.postprocessing))
    probs = None
    for member in job.members:  # one member's raw-grid probabilities at a time (summed in member order)
        restored = restore_probabilities(*member).astype(np.float32, copy=False)
        if probs is None:
            probs = restored
        else:
            probs += restored
    if len(job.members) > 1:
        probs /= len(job.members)
    labels = apply_postprocessing(probabilities_to_labels(probs, job.scheme), job.postprocessing)
    if job.npz is not None:
        save_probabilities(job.npz, probs)
    del probs
    return _write(job, labels)


def _write(job: ExportJob, labels: np.ndarray) -> tuple[Path, list]:
    try:
        path = (job.writer or write_label)(job.target, labels, job.geometry)
    except BaseException:
        if job.npz is not None:  # no probabilities without their segmentation (--continue would keep them)
            job.npz.unlink(missing_ok=True)
        raise
    rows = []
    if job.image is not None:
        rows = case_statistics(labels, job.image, job.geometry, job.label_names, job.case_id, job.channel_names)
    return path, rows


class Exporter:
    """Runs export jobs in this process (`workers` 1) or in a pool of `workers` processes, at most workers + 1 jobs
    in flight. Use as a context manager: `submit` each job, then `finish` -> the results in submission order."""

    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers))
        self.pool = None
        self.pending: list[tuple[int, str, Future]] = []
        self.results: dict[int, ExportResult] = {}
        self.count = 0

    def __enter__(self) -> Exporter:
        if self.workers > 1:
            # a private loky pool, not the process-wide reusable one: joblib.Parallel (evaluation, preprocessing)
            # reuses that one and cannot share it with a pool made outside joblib

            threads = str(max(1, usable_cores() // (self.workers + 1)))
            env = {name: threads for name in THREAD_VARIABLES}
            self.pool = ProcessPoolExecutor(max_workers=self.workers, env=env, timeout=IDLE_TIMEOUT_S)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.pool is not None:
            if exc_type is not None:
                for _, _, future in self.pending:
                    future.cancel()  # queued jobs do not start; running ones finish (complete files)
            self.pool.shutdown(wait=True)
        self.pool = None

    def submit(self, job: ExportJob) -> None:
        index, self.count = self.count, self.count + 1
        if self.pool is None:
            self.results[index] = export_case(job)
            return
        self._collect(block=False)  # a failed job stops the run as soon as it is seen
        while len(self.pending) > self.workers:
            self._collect(block=True)
        job.parent_pid = os.getpid()
        self.pending.append((index, job.case_id, self.pool.submit(export_case, job)))

    def finish(self) -> list[ExportResult]:
        while self.pending:
            self._collect(block=True)
        return [self.results[i] for i in sorted(self.results)]

    def _collect(self, block: bool) -> None:
        if block and self.pending:
            wait([f for _, _, f in self.pending], return_when=FIRST_COMPLETED)
        still = []
        for index, case_id, future in self.pending:
            if not future.done():
                still.append((index, case_id, future))
                continue
            try:
                self.results[index] = future.result()  # a worker's AutosegError is raised here as it is
            except BrokenExecutor as exc:
                raise ImageIOError(
                    f"case {case_id!r}: an export worker process died ({type(exc).__name__}), probably out of "
                    "memory; rerun with fewer export workers (-j 1) and --continue"
                ) from exc
        self.pending = still


# ---- how many export workers -----------------------------------------------------------------------------------
def export_workers(requested: int, cases, predictors, available: float | None = None) -> int:
    """Export workers for `cases` (InputCase) predicted by `predictors`: at most `requested` and the number of cases,
    fewer when the largest case's export (its class probabilities at the network's resolution, COPIES['predict']
    float32 copies) would not fit memory (`resources.choose_workers`, which logs the reason)."""
    requested = min(max(1, int(requested)), len(cases))
    if requested <= 1:
        return 1
    found = largest_case([case.files for case in cases if case.series is None])
    for case in cases:  # DICOM series: the size from the scanned headers (one channel)
        if case.series is not None and (found is None or np.prod(case.series.shape) > np.prod(found[0])):
            found = (tuple(case.series.shape), 1, case.series.geometry)
    if found is None:
        return requested  # reported with its name when the case is read
    shape, channels, geometry = found
    zoom = max(network_zoom(geometry.spacing, p.source.plans.transpose, p.configuration) for p in predictors)
    classes = predictors[0].source.num_classes * len(predictors)
    what = f"{describe(shape, channels)} with {classes} class probabilities"
    need = case_bytes(shape, classes, COPIES["predict"], zoom)
    return choose_workers(requested, need, what, available, stage="export workers")


def network_zoom(spacing: Sequence[float], transpose: Sequence[int], configuration: Configuration) -> float:
    """Voxels at the configuration's spacing per raw voxel for an image of `spacing` (z, y, x)."""
    moved = tuple(float(spacing[a]) for a in transpose)
    target = target_spacing(configuration, moved)
    return float(math.prod(s / t for s, t in zip(moved, target)))
