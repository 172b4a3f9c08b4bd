"""`autoseg benchmark`: where does the time go on this machine, and how long would a full training take?

Measured on the preprocessed data of one configuration (``autoseg plan_and_preprocess`` first):

* the data pipeline alone: augmented batches per second (`autoseg.training.loader.benchmark_loader`);
* seconds per training iteration with the real data loading (the trainer's loaders and worker processes), and with
  data loading switched off (one fixed batch reused), so the difference is the cost of waiting for data;
* seconds per validation iteration (forward and loss on the fixed batch, no gradient);
* on CUDA, peak GPU memory (``torch.cuda.max_memory_allocated``) against the planner's estimate: the plans'
  feature-map voxel count (autoseg.networks.memory) scaled as the planner scales it, i.e. ``reference_gb`` GB for
  ``reference`` voxels at the reference batch size (8 GB for 560e6 voxels at batch 2 for the 3D plain U-Net);
* sliding-window inference seconds of one preprocessed case (the median-sized one), without and with mirror TTA;
* per augmentation pipeline (the batched torch one and the batchgenerators reference): CPU milliseconds per batch
  of sampling alone and of all the CPU work of a batch, device milliseconds of the augmentation on a GPU, and the CPU
  cores needed to feed one training step (the one measured here, or ``--step-ms``).

The network, loss, optimizer and loaders come from the trainer class (`--trainer`), so a custom trainer is measured as
it would train. From these numbers the wall time of a full training (1000 epochs x 250 + 50 iterations by default) is
extrapolated.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from autoseg.errors import ConfigError
from autoseg.inference.sliding_window import sliding_window_logits
from autoseg.log import logger
from autoseg.networks.memory import estimate_feature_map_voxels
from autoseg.planning.planner import plans_memory_reference
from autoseg.planning.plans import Configuration, Plans
from autoseg.preprocessing.cascade import with_prev_stage
from autoseg.preprocessing.storage import list_cases, load_case
from autoseg.serialization import save_json
from autoseg.training.augment import augment_spec
from autoseg.training.config import TrainConfig
from autoseg.training.context import FoldContext, fold_context, setup_runtime
from autoseg.training.loader import TRAIN_STREAM, BatchSource, DataIterator, benchmark_loader, default_num_workers
from autoseg.training.loop import StepContext, compute_loss, train_step
from autoseg.training.trainer import trainers
from autoseg.workspace import Workspace

WARMUP_ITERATIONS = 2


def _context(ws: Workspace, dataset: str, configuration: str, plans_name: str, trainer: str):
    """(fold context over all cases, Plans) of the configuration; clear errors when nothing is preprocessed."""
    name = ws.resolve(dataset)
    number = ws.dataset_number(name)
    plans_file = ws.plans_file(name, plans_name)
    if not plans_file.is_file():
        raise ConfigError(f"{plans_file}: plans not found; run `autoseg plan_and_preprocess -d {number}` first")
    plans = Plans.load(plans_file)
    conf = plans.configuration(configuration)
    folder = ws.preprocessed_config(name, conf.data_identifier)
    if not list_cases(folder):
        raise ConfigError(
            f"{folder}: no preprocessed cases of {configuration!r}; run `autoseg plan_and_preprocess -d {number}` "
            f"(or `autoseg preprocess -d {number} -c {configuration}`) first"
        )
    if not ws.fingerprint_file(name).is_file():
        raise ConfigError(f"{ws.fingerprint_file(name)}: fingerprint not found; run `autoseg plan_and_preprocess`")
    return fold_context(ws, name, plans, configuration, "all", trainer, write=False), plans


def planner_memory_estimate(
    plans: Plans, configuration: Configuration, batch_size: int, in_channels: int, num_classes: int
) -> dict:
    """The planner's GPU-memory model for this configuration: feature-map voxels and the GB they stand for."""
    net = configuration.network
    try:
        voxels = estimate_feature_map_voxels(
            net.name, net.params, configuration.patch_size, in_channels, num_classes, deep_supervision=False
        )
        ref = plans_memory_reference(plans, net.name)
    except (ConfigError, ValueError, KeyError) as exc:  # a custom network the planner has no model for
        logger.info(f"no planner memory estimate: {exc}")
        return {"feature_map_voxels": None, "estimate_gb": None, "planned_budget_gb": plans.gpu_memory_gb}
    dim = configuration.ndim
    gb = voxels * batch_size / ref.batch(dim) / ref.voxels(dim) * ref.gpu_gb
    return {"feature_map_voxels": int(voxels), "estimate_gb": float(gb), "planned_budget_gb": plans.gpu_memory_gb}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn, n: int) -> float:
    """Mean seconds of `n` calls of fn()."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / n


def _to_device(batch, device: torch.device):
    return batch.data.to(device, non_blocking=True), [t.to(device, non_blocking=True) for t in batch.target]


def _training_times(trainer, device: torch.device, iterations: int) -> tuple[dict, torch.nn.Module]:
    """Seconds per train iteration with loading / with a fixed batch, per val iteration; peak memory on CUDA."""
    model = trainer.build_network().to(device)
    optimizer = trainer.build_optimizer(model)
    scaler = torch.amp.GradScaler("cuda", enabled=trainer.amp)
    ctx = StepContext(
        model, trainer.build_loss(), optimizer, scaler, device, trainer.amp, trainer.cfg.grad_clip,
        trainer.fc.num_classes, trainer.dist,
    )  # fmt: skip
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    train_iter, val_iter = trainer.build_loaders()
    try:
        for _ in range(WARMUP_ITERATIONS):
            train_step(ctx, *_to_device(next(train_iter), device))
        waited_before = train_iter.wait_seconds
        with_data = _timed(device, lambda: train_step(ctx, *_to_device(next(train_iter), device)), iterations)
        waited = (train_iter.wait_seconds - waited_before) / iterations
        fixed = _to_device(next(train_iter), device)
    finally:
        train_iter.close()
        val_iter.close()
    without_data = _timed(device, lambda: train_step(ctx, *fixed), iterations)

    def val_step():
        with torch.no_grad(), torch.autocast(device.type, enabled=ctx.amp):
            float(compute_loss(ctx, model(fixed[0]), fixed[1]))

    model.eval()
    val = _timed(device, val_step, max(2, iterations // 2))
    peak = torch.cuda.max_memory_allocated(device) / 1024**3 if device.type == "cuda" else None
    times = {
        "seconds_per_iteration": with_data,
        "seconds_per_iteration_no_loading": without_data,
        "data_wait_seconds_per_iteration": waited,
        "val_seconds_per_iteration": val,
        "peak_gpu_memory_gb": peak,
    }
    return times, model


def _median_case(folder: Path) -> str:
    ids = list_cases(folder)
    sizes = [np.load(folder / f"{c}.npy", mmap_mode="r").size for c in ids]
    return ids[int(np.argsort(sizes)[len(sizes) // 2])]


def _inference_times(
    model: torch.nn.Module, configuration: Configuration, folder: Path, device: torch.device, fc: FoldContext = None
) -> dict:
    """Sliding-window seconds of the median-sized preprocessed case without and with mirror TTA (a cascade stage:
    with its previous-stage channels from `fc`)."""
    case_id = _median_case(folder)
    data = np.array(load_case(folder, case_id, mmap=False, with_locations=False).data)
    if fc is not None and fc.prev_stage_folder is not None:
        data = with_prev_stage(data, fc.prev_stage_folder, case_id, fc.foreground_labels)
    image = torch.from_numpy(data)
    model.deep_supervision = False
    mirror = tuple(range(configuration.ndim))
    out = {"case": case_id, "shape": list(image.shape[1:]), "mirror_axes": list(mirror)}
    for key, axes in (("seconds_tta_off", ()), ("seconds_tta_on", mirror)):
        run = lambda axes=axes: sliding_window_logits(  # noqa: E731
            model, image, configuration.patch_size, step=0.5, mirror_axes=axes, device=device
        )
        out[key] = _timed(device, run, 1)
    return out


PIPELINES = ("default", "batchgenerators")  # the batched torch pipeline and the batchgenerators reference


def _augment_next(source: BatchSource, pending, device: torch.device) -> None:
    source.augment(next(pending), device)


def _worker_ms(source: BatchSource, n_batches: int) -> float:
    """CPU milliseconds per batch of one loader worker process (the whole process: crops, augmentation where it
    runs there, and the hand-over to shared memory) in the steady state of a training run: after enough warm-up
    batches for the worker to have opened every case twice over (opening a case costs milliseconds, once)."""
    reader = source.sampler.reader
    warmup = 2 + math.ceil(2 * min(len(reader.case_ids), reader.max_open) / source.batch_size)
    with DataIterator(source, 1) as it:
        for _ in range(warmup):
            next(it)
        start = it.worker_cpu_seconds()
        for _ in range(n_batches):
            next(it)
        return (it.worker_cpu_seconds() - start) / n_batches * 1000


def pipeline_costs(
    fc: FoldContext,
    batch_size: int,
    device: torch.device,
    n_batches: int,
    step_ms: float | None,
    pipelines: tuple[str, ...] | list[str] = PIPELINES,
) -> list[dict]:
    """Per augmentation pipeline, CPU milliseconds per batch: sampling alone (this process, one thread), and the
    whole CPU time of a loader worker process when a GPU trains (the torch pipeline: it crops and draws the
    parameters, the GPU augments; a numpy pipeline: it does everything) and when the CPU trains (it crops and
    augments). On a GPU also the device milliseconds of the augmentation. "Cores needed" = the worker CPU ms per
    batch on this device / `step_ms`."""
    spec = augment_spec(fc.configuration, True, fc.foreground_labels if fc.prev_stage_folder is not None else ())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for name in pipelines:
            sources = [
                BatchSource(
                    fc.data_folder,
                    fc.train_ids,
                    spec,
                    name,
                    batch_size,
                    0.33,
                    0,
                    TRAIN_STREAM,
                    fc.prev_stage_folder,
                    defer_augmentation=defer,
                )  # fmt: skip
                for defer in (True, False)
            ]
            reader = sources[0].sampler.reader  # steady state of a training run: the cases are open
            for case_id in reader.case_ids[: reader.max_open]:
                reader.open(case_id)
            rng = np.random.default_rng(0)
            start = time.process_time()
            for _ in range(n_batches):
                sources[0].sampler.sample(rng, batch_size)
            sampling = (time.process_time() - start) / n_batches * 1000
            gpu_ms, cpu_ms = (_worker_ms(source, n_batches) for source in sources)
            device_ms = None
            if device.type == "cuda" and sources[0].defer:
                deferred = iter([sources[0].make(i) for i in range(1, n_batches + 1)])
                device_ms = 1000 * _timed(device, partial(_augment_next, sources[0], deferred, device), n_batches)
            worker_ms = gpu_ms if device.type == "cuda" else cpu_ms
            rows.append({
                "pipeline": name, "cpu_ms_sampling": sampling, "cpu_ms_per_batch_gpu_training": gpu_ms,
                "cpu_ms_per_batch_cpu_training": cpu_ms, "device_ms_augmentation": device_ms, "step_ms": step_ms,
                "cores_needed": worker_ms / step_ms if step_ms else None,
            })  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return rows


def _machine(device: torch.device) -> dict:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": cores,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "device": str(device),
        "gpu": gpu,
    }


def full_training_estimate(train: dict, epochs: int, iterations: int, val_iterations: int) -> dict:
    """Wall-time extrapolation of `epochs` x (`iterations` train + `val_iterations` val) iterations."""
    per_epoch = iterations * train["seconds_per_iteration"] + val_iterations * train["val_seconds_per_iteration"]
    floor = iterations * train["seconds_per_iteration_no_loading"] + val_iterations * train["val_seconds_per_iteration"]
    return {
        "epochs": epochs,
        "iterations_per_epoch": iterations,
        "val_iterations_per_epoch": val_iterations,
        "seconds_per_epoch": per_epoch,
        "hours": per_epoch * epochs / 3600,
        "hours_no_loading": floor * epochs / 3600,
    }


def run_benchmark(
    ws: Workspace,
    dataset: str,
    configuration: str,
    plans_name: str = "default",
    iterations: int = 20,
    device: str | None = None,
    num_workers: int | None = None,
    trainer: str = "default",
    epochs: int = 1000,
    iterations_per_epoch: int = 250,
    val_iterations_per_epoch: int = 50,
    step_ms: float | None = None,
) -> dict:
    """Run every measurement (see the module docstring) and return them as a JSON-safe dict.

    `step_ms`: the training step time for which the pipelines' "cores needed" are computed (default: the step
    measured here without data loading; e.g. 14.8 for nnU-Net's Hippocampus step on an H100)."""
    if iterations < 1:
        raise ConfigError(f"--iterations must be >= 1, got {iterations}")
    fc, plans = _context(ws, dataset, configuration, plans_name, trainer)
    dev, _ = setup_runtime(device, deterministic=False)
    machine = _machine(dev)  # before the measurements: the load average says how busy the machine was
    workers = default_num_workers() if num_workers is None else max(0, int(num_workers))
    conf = fc.configuration
    cfg = TrainConfig(validate_at_end=False)
    batch = cfg.batch_size or conf.batch_size
    logger.info(f"benchmark {fc.dataset} {conf.name}: data pipeline ({iterations} batches, {workers} worker(s))")
    loader = benchmark_loader(
        fc.data_folder, fc.train_ids, conf, num_workers=workers, n_batches=iterations, warmup=2,
        prev_stage=fc.prev_stage_folder, prev_stage_labels=fc.foreground_labels,
    )  # fmt: skip
    logger.info(f"benchmark: {iterations} training iterations with and without data loading on {dev}")
    torch.manual_seed(cfg.seed)
    train, model = _training_times(trainers.get(trainer)(fc, cfg, dev, workers, False), dev, iterations)
    logger.info("benchmark: sliding-window inference of one case")
    inference = _inference_times(model, conf, fc.data_folder, dev, fc)
    step = step_ms if step_ms else 1000 * train["seconds_per_iteration_no_loading"]
    logger.info(f"benchmark: CPU cost of the augmentation pipelines ({', '.join(PIPELINES)})")
    pipelines = pipeline_costs(fc, batch, dev, iterations, step)
    memory = planner_memory_estimate(plans, conf, batch, fc.in_channels, fc.num_classes)
    memory["peak_gpu_memory_gb"] = train.pop("peak_gpu_memory_gb")
    return {
        "dataset": fc.dataset,
        "plans": plans.name,
        "configuration": conf.name,
        "trainer": trainer,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine,
        "patch_size": list(conf.patch_size),
        "batch_size": batch,
        "num_workers": workers,
        "iterations": iterations,
        "loader": loader,
        "pipelines": pipelines,
        "train": train,
        "memory": memory,
        "inference": inference,
        "full_training": full_training_estimate(train, epochs, iterations_per_epoch, val_iterations_per_epoch),
    }


def save_benchmark(result: dict, path: str | Path) -> Path:
    return save_json(path, result)


def _fmt(value, unit: str = "", digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}{unit}"


def format_table(r: dict) -> str:
    """The benchmark result as an aligned two-column text table."""
    m, tr, mem, inf, full = r["machine"], r["train"], r["memory"], r["inference"], r["full_training"]
    wait_share = (
        tr["data_wait_seconds_per_iteration"] / tr["seconds_per_iteration"] if tr["seconds_per_iteration"] else 0
    )
    rows = [
        ("dataset / configuration", f"{r['dataset']} / {r['configuration']} (plans {r['plans']})"),
        ("machine", f"{m['gpu'] or m['cpu']}, {m['cpu_cores']} CPU cores, torch {m['torch']}, device {m['device']}"),
        ("load average (1 min)", _fmt(m.get("load_average_1min"))),
        ("patch x batch", f"{'x'.join(map(str, r['patch_size']))} x {r['batch_size']}"),
        ("data pipeline alone", f"{_fmt(r['loader']['batches_per_s'])} batches/s ({r['num_workers']} worker(s))"),
        ("train iteration", f"{_fmt(tr['seconds_per_iteration'], ' s')} with data loading"),
        ("train iteration, fixed batch", f"{_fmt(tr['seconds_per_iteration_no_loading'], ' s')} (no data loading)"),
        ("waiting for data", f"{_fmt(tr['data_wait_seconds_per_iteration'], ' s')}/iteration ({wait_share:.0%})"),
        ("val iteration", _fmt(tr["val_seconds_per_iteration"], " s")),
        *[
            (
                f"pipeline {p['pipeline']}",
                f"CPU ms/batch: {_fmt(p['cpu_ms_sampling'])} sampling, {_fmt(p['cpu_ms_per_batch_gpu_training'])} "
                f"for GPU training, {_fmt(p['cpu_ms_per_batch_cpu_training'])} for CPU training; device "
                f"{_fmt(p['device_ms_augmentation'], ' ms')}; {_fmt(p['cores_needed'], '', 2)} cores for a "
                f"{_fmt(p['step_ms'], ' ms')} step",
            )
            for p in r.get("pipelines", [])
        ],
        ("peak GPU memory", _fmt(mem["peak_gpu_memory_gb"], " GB")),
        ("planner estimate", f"{_fmt(mem['estimate_gb'], ' GB')} (plans budget {mem['planned_budget_gb']:g} GB)"),
        ("inference, 1 case", f"{_fmt(inf['seconds_tta_off'], ' s')} ({'x'.join(map(str, inf['shape']))} voxels)"),
        ("inference, 1 case + TTA", _fmt(inf["seconds_tta_on"], " s")),
        (
            f"full training ({full['epochs']} x {full['iterations_per_epoch']})",
            f"{_fmt(full['hours'], ' h')} ({_fmt(full['hours_no_loading'], ' h')} without data loading)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
