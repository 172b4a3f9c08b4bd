"""Infinite, seeded, multi-process training and validation batch streams.

Batch i of a stream is a pure function of (seed, seed_key, stream, i): its sampler Generator and the generators of
the augmentation (a `torch.Generator` for the batched torch pipelines, which draw every parameter before applying any;
numpy's and Python's global generators for batchgenerators' transforms, whose states are restored afterwards) are
seeded from ``SeedSequence([seed, *seed_key, stream, i])`` (seed_key: e.g. fold and DDP rank). Worker w of N produces
batches w, w + N, ... and torch's DataLoader returns them in order, so a stream is identical for every worker count
(0 = in the calling process) and can be resumed at any batch (`start_batches`).

Background workers are torch DataLoader processes over an IterableDataset: batches travel through shared memory
(each worker writes into a few reused buffers, `shared_ring`; the consumer copies a batch out on receipt), dead
workers are detected and reported, and shutdown is explicit with `close()`.

Where augmentation runs: with a batched torch pipeline and a GPU, the workers only crop (and draw the parameters) and
ship `SampledBatch`es (float32 crops as stored, int8 labels) through pinned memory; the training process augments
them on the GPU, queued on the device's stream ahead of the step. On CPU the same pipeline runs inside the workers.
"""

from __future__ import annotations

import os
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from autoseg.log import logger
from autoseg.planning.plans import Configuration
from autoseg.training.augment import AugmentSpec, augment_spec
from autoseg.training.batch_augment.pipeline import BatchPipeline
from autoseg.training.pipelines import build_pipeline
from autoseg.training.sampling import PatchSampler, check_cases
from autoseg.training.shared_ring import PREFETCH, RING_SLOTS, SharedRing, SlotBuffers, from_wire, to_wire

TRAIN_STREAM, VAL_STREAM = 0, 1
WORKER_TIMEOUT_S = 300.0  # a worker that produces nothing for this long is reported instead of waited on forever


@dataclass(frozen=True)
class Batch:
    data: torch.Tensor  # (B, C, *patch) float32
    target: list[torch.Tensor]  # per deep-supervision scale: (B, 1, *patch // factor) int64, full resolution first

    def pin_memory(self) -> Batch:
        return Batch(self.data.pin_memory(), [t.pin_memory() for t in self.target])

    def clone(self) -> Batch:
        return Batch(self.data.clone(), [t.clone() for t in self.target])

    def into(self, slot: SlotBuffers) -> Batch:
        """This batch copied into `slot`'s shared buffers (a worker's reused ring slot)."""
        return Batch(slot.copy(self.data), [slot.copy(t) for t in self.target])


@dataclass(frozen=True)
class SampledBatch:
    """One batch as the workers ship it to a GPU training process: the crops before augmentation, compact, and the
    augmentation's parameters already drawn (so the batch does not depend on where it is augmented)."""

    data: torch.Tensor  # (B, C, *sample_size) float32, as stored
    seg: torch.Tensor  # (B, 1 or 2, *sample_size) int8 (int16 above 127 labels); -1 outside the image
    params: Any  # the pipeline's drawn parameters: small CPU tensors

    def pin_memory(self) -> SampledBatch:
        return SampledBatch(self.data.pin_memory(), self.seg.pin_memory(), self.params)

    def clone(self) -> SampledBatch:
        return SampledBatch(self.data.clone(), self.seg.clone(), self.params)

    def __getstate__(self) -> dict:  # to another process: the parameters as numpy (small tensors cost a file each)
        return {"data": self.data, "seg": self.seg, "params": to_wire(self.params)}

    def __setstate__(self, state: dict) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, from_wire(value) if key == "params" else value)


class BatchSource:
    """Produces batch `index` of one stream deterministically (picklable: workers get a copy)."""

    def __init__(
        self,
        folder: str | Path,
        case_ids: Sequence[str],
        spec: AugmentSpec,
        augmentation: str,
        batch_size: int,
        oversample: float,
        seed: int | Sequence[int],
        stream: int,
        prev_stage: str | Path | None = None,
        augmentation_kwargs: Mapping[str, Any] | None = None,
        defer_augmentation: bool = False,
        oversample_classes: Sequence[Sequence[int]] | None = None,
    ):
        """`defer_augmentation`: a batched (torch) pipeline's batches are made as `SampledBatch`es and augmented by
        `augment` on the training device (a GPU); otherwise (CPU training, or a batchgenerators pipeline) `make`
        returns the finished `Batch`."""
        self.pipeline = build_pipeline(augmentation, spec, augmentation_kwargs)
        size = self.pipeline.sample_size
        self.sampler = PatchSampler(folder, case_ids, size, oversample, spec.patch_size, prev_stage, oversample_classes)
        self.batch_size, self.stream = int(batch_size), int(stream)
        self.entropy = [int(v) for v in np.atleast_1d(seed)]  # seed and seed_key
        self.defer = bool(defer_augmentation) and isinstance(self.pipeline, BatchPipeline)

    def make(self, index: int, slot: SlotBuffers | None = None) -> Batch | SampledBatch:
        """Batch `index` of the stream; with `slot` (in a worker) its tensors are that slot's shared buffers."""
        sampler_seq, global_seq = np.random.SeedSequence([*self.entropy, self.stream, int(index)]).spawn(2)
        rng = np.random.default_rng(sampler_seq)
        if isinstance(self.pipeline, BatchPipeline):
            shipped = slot is not None and self.defer  # crops straight into the shared memory that is shipped
            data, seg = self.sampler.sample(rng, self.batch_size, slot.empty_numpy if shipped else np.empty)
            gen = torch.Generator().manual_seed(int(global_seq.generate_state(1, np.uint64)[0] >> 1))
            params = self.pipeline.draw(gen, len(data), data.shape[1])
            tensor = slot.as_tensor if shipped else torch.from_numpy
            sampled = SampledBatch(tensor(data), tensor(seg), params)  # seg int8 as stored
            if self.defer:
                return sampled
            batch = self.augment(sampled)
            return batch.into(slot) if slot is not None else batch
        # batchgenerators draws from numpy's and Python's global generators: seed both, restore the caller's after
        saved = np.random.get_state(), random.getstate()
        words = global_seq.generate_state(4)
        np.random.seed(words)
        random.seed(int.from_bytes(words.tobytes(), "little"))
        try:
            data, seg = self.sampler.sample(rng, self.batch_size)
            data, targets = self.pipeline(data, seg)
        finally:
            np.random.set_state(saved[0])
            random.setstate(saved[1])
        batch = Batch(torch.from_numpy(data), [torch.from_numpy(t) for t in targets])
        return batch.into(slot) if slot is not None else batch

    def augment(self, sampled: SampledBatch, device: torch.device | None = None) -> Batch:
        """The batched pipeline applied to `sampled` on `device` (default: where its tensors are)."""
        data, seg = sampled.data, sampled.seg
        if device is not None:
            data, seg = data.to(device, non_blocking=True), seg.to(device, non_blocking=True)
        out, targets = self.pipeline.apply(data, seg, sampled.params)
        return Batch(out, list(targets))


class _BatchStream(IterableDataset):
    def __init__(self, source: BatchSource, start: int):
        self.source, self.start = source, start

    def __iter__(self):
        info = get_worker_info()
        index, step = (self.start + info.id, info.num_workers) if info else (self.start, 1)
        ring = SharedRing() if info else None  # in a worker: batches are written into reused shared memory
        while True:
            yield self.source.make(index, ring.next() if ring else None)
            index += step


class DataIterator:
    """Infinite iterator of `Batch`es. `wait_seconds` sums the time spent blocked in `next()`.

    `position` is the index of the next batch (pass it back as a start to resume). Call `close()` (or use as a
    context manager) to stop the worker processes; a worker that dies raises RuntimeError instead of hanging.
    """

    def __init__(
        self,
        source: BatchSource,
        num_workers: int,
        start: int = 0,
        pin_memory: bool = False,
        device: torch.device | None = None,
    ):
        """`device`: where a deferred batch (`SampledBatch`) is augmented; the returned `Batch` lives there."""
        self.source, self.num_workers, self.position = source, int(num_workers), int(start)
        self.pin_memory, self.device = bool(pin_memory), device
        self.wait_seconds = 0.0
        self.last_wait = 0.0
        self._it = None
        self._mapped: deque[Batch | SampledBatch] = deque(maxlen=max(1, self.num_workers) * RING_SLOTS)
        if self.num_workers > 0:
            loader = DataLoader(
                _BatchStream(source, self.position),
                batch_size=None,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                timeout=WORKER_TIMEOUT_S,
                prefetch_factor=PREFETCH,
            )
            self._it = iter(loader)
        self._closed = False

    def __iter__(self) -> DataIterator:
        return self

    def __next__(self) -> Batch:
        if self._closed:
            raise RuntimeError("this data iterator was closed; create new loaders with make_loaders")
        start = time.perf_counter()
        batch = self._next_from_workers() if self._it is not None else self._next_in_process()
        if isinstance(batch, SampledBatch):  # queued on the device's stream, ahead of the step that uses it
            batch = self.source.augment(batch, self.device)
        self.last_wait = time.perf_counter() - start
        self.wait_seconds += self.last_wait
        self.position += 1
        return batch

    def _next_in_process(self) -> Batch | SampledBatch:
        batch = self.source.make(self.position)
        return batch.pin_memory() if self.pin_memory else batch

    def _next_from_workers(self) -> Batch | SampledBatch:
        """The next batch, out of the worker's shared ring: pinning (a GPU) copies it, `augment` copies a
        `SampledBatch` before returning, and a finished `Batch` is cloned here, before more batches are asked for."""
        try:
            batch = next(self._it)
        except (RuntimeError, OSError, EOFError) as exc:  # a dead sender also breaks the shared-memory handover
            dead = self._dead_workers(wait_s=0.0 if isinstance(exc, RuntimeError) else 1.0)
            if isinstance(exc, RuntimeError) and not dead and "DataLoader worker" not in str(exc):
                raise
            self.close()
            raise RuntimeError(
                f"data-loading worker process(es) {dead or ''} died or stalled ({type(exc).__name__}: {exc}). If one "
                "was killed for lack of memory, use fewer workers (num_workers) or a smaller batch."
            ) from exc
        if self.pin_memory:
            return batch
        self._mapped.append(batch)  # keeps the ring mapped here, so that torch finds its memory in its cache
        return batch if isinstance(batch, SampledBatch) else batch.clone()

    def _dead_workers(self, wait_s: float) -> list[int]:
        """Pids of exited workers, polling up to `wait_s` (a killed process closes its sockets before it is reaped)."""
        deadline = time.monotonic() + wait_s
        while True:
            dead = [w.pid for w in getattr(self._it, "_workers", []) if not w.is_alive()]
            if dead or time.monotonic() >= deadline:
                return dead
            time.sleep(0.05)

    def take_wait_seconds(self) -> float:
        """Seconds waited since the last call (e.g. per epoch), and reset the counter."""
        waited, self.wait_seconds = self.wait_seconds, 0.0
        return waited

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in getattr(self._it, "_workers", [])]

    def worker_cpu_seconds(self) -> float:
        """CPU seconds (user + system) the worker processes have used so far (Linux /proc; 0 without workers)."""
        return sum(process_cpu_seconds(pid) for pid in self.worker_pids)

    def close(self) -> None:
        """Stop and join the worker processes (idempotent)."""
        self._closed = True
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def __enter__(self) -> DataIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to clean
            pass


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` from /proc/<pid>/stat (fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def default_num_workers() -> int:
    """All usable cores but one (the main process runs the model), at most 16."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(cores - 1, 16))


def make_loaders(
    folder: str | Path,
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    configuration: Configuration,
    train_config=None,
    num_workers: int | None = None,
    *,
    batch_size: int | None = None,
    oversample_foreground: float = 0.33,
    augmentation: str = "default",
    deep_supervision: bool = True,
    seed: int = 12345,
    pin_memory: bool = False,
    seed_key: Sequence[int] = (),
    start_batches: tuple[int, int] = (0, 0),
    prev_stage: str | Path | None = None,
    prev_stage_labels: Sequence[int] = (),
    device: torch.device | None = None,
    oversample_classes: Sequence[Sequence[int]] | None = None,
) -> tuple[DataIterator, DataIterator]:
    """Training (augmented) and validation ("none") batch iterators over a preprocessed configuration folder.

    Args:
        folder: the configuration's preprocessed folder (see autoseg.preprocessing.storage).
        configuration: plans `Configuration` (patch size, batch size, network strides, use_mask_for_norm).
        train_config: optional TrainConfig; its oversample_foreground, seed, augmentation, deep_supervision (and a
            nonzero batch_size) replace the keyword defaults. An explicit `batch_size` wins (per-rank under DDP).
        num_workers: background processes for training (validation gets max(1, n // 2)); default: cores - 1;
            0 = everything in the calling process.
        seed_key: non-negative integers mixed into the seed, e.g. (fold, rank), so folds/ranks see different streams.
        start_batches: (train, val) index of the first batch, to resume the streams exactly (`DataIterator.position`).
        prev_stage, prev_stage_labels: a cascade stage's previous-stage folder and foreground labels (the batches
            then hold one extra one-hot data channel per label).
        device: the training device. On a GPU the workers only sample (and draw the augmentation's parameters) and
            the batched augmentation runs on the GPU in this process; elsewhere it runs in the workers.
        oversample_classes: label-value groups that foreground oversampling centres patches on (regions, or the
            labels without the ignore label); default every stored label > 0.
    Returns:
        (train_iter, val_iter), infinite; batches are identical for every `num_workers` given the seed.
    """
    augmentation_kwargs = None
    if train_config is not None:
        oversample_foreground = train_config.oversample_foreground
        seed, augmentation = train_config.seed, train_config.augmentation
        augmentation_kwargs = getattr(train_config, "augmentation_kwargs", None)
        deep_supervision = train_config.deep_supervision
        batch_size = batch_size or getattr(train_config, "batch_size", 0) or None
    batch_size = int(batch_size or configuration.batch_size)
    workers = default_num_workers() if num_workers is None else int(num_workers)
    check_cases(folder, list(train_ids) + list(val_ids))
    spec = augment_spec(configuration, deep_supervision, prev_stage_labels if prev_stage is not None else ())
    common = dict(spec=spec, batch_size=batch_size, oversample=oversample_foreground, seed=[seed, *seed_key])
    common["prev_stage"] = prev_stage
    common["oversample_classes"] = oversample_classes
    aug = dict(augmentation=augmentation, augmentation_kwargs=augmentation_kwargs)
    on_gpu = device is not None and torch.device(device).type == "cuda"
    train = BatchSource(folder, train_ids, stream=TRAIN_STREAM, defer_augmentation=on_gpu, **aug, **common)
    val_ids = list(val_ids) or list(train_ids)
    val = BatchSource(folder, val_ids, augmentation="none", stream=VAL_STREAM, **common)
    pin = bool(pin_memory) and torch.cuda.is_available()
    logger.debug("data loading: %d train / %d val workers, batch %d", workers, max(1, workers // 2), batch_size)
    return (
        DataIterator(train, workers, start_batches[0], pin, device),
        DataIterator(val, max(1, workers // 2) if workers else 0, start_batches[1], pin, device),
    )


def benchmark_loader(
    folder: str | Path,
    case_ids: Sequence[str],
    configuration: Configuration,
    *,
    batch_size: int | None = None,
    augmentation: str = "default",
    num_workers: int = 0,
    n_batches: int = 30,
    warmup: int = 3,
    seed: int = 0,
    prev_stage: str | Path | None = None,
    prev_stage_labels: Sequence[int] = (),
) -> dict:
    """Batches per second of the data pipeline alone (no model): `warmup` batches are discarded first."""
    batch_size = int(batch_size or configuration.batch_size)
    check_cases(folder, case_ids)
    spec = augment_spec(configuration, prev_stage_labels=prev_stage_labels if prev_stage is not None else ())
    source = BatchSource(folder, case_ids, spec, augmentation, batch_size, 0.33, seed, TRAIN_STREAM, prev_stage)
    with DataIterator(source, num_workers) as it:
        for _ in range(warmup):
            next(it)
        start = time.perf_counter()
        for _ in range(n_batches):
            next(it)
        seconds = time.perf_counter() - start
    return {
        "augmentation": augmentation,
        "num_workers": num_workers,
        "batch_size": batch_size,
        "patch_size": list(configuration.patch_size),
        "n_batches": n_batches,
        "seconds": seconds,
        "batches_per_s": n_batches / seconds,
    }
