"""Data-parallel training with torch.distributed, launched by ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK).

The global batch is split across ranks (the remainder goes to the first ranks) and the foreground oversampling
fraction is recomputed per rank so that the global pattern of forced-foreground samples is the one a single process
would draw (sample j of the global batch is forced iff j >= round(B * (1 - p))). Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from autoseg.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info(environ=os.environ) -> DistInfo:
    """Rank information from the torchrun environment (a single process when absent)."""
    if "WORLD_SIZE" not in environ or int(environ["WORLD_SIZE"]) <= 1:
        return DistInfo()
    return DistInfo(int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", 0)))


def init(info: DistInfo, device: torch.device) -> None:
    """Start the process group (nccl on CUDA, gloo on CPU) once."""
    if not info.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def shutdown() -> None:
    """Wait for every rank (rank 0 may still be writing), then tear the process group down together.

    Without the barrier a rank that finishes first can exit while gloo threads still serve the others, which
    aborts it ("terminate called without an active exception").
    """
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def rank_device(info: DistInfo, device: torch.device) -> torch.device:
    return torch.device("cuda", info.local_rank) if device.type == "cuda" and info.enabled else device


def split_batch(global_batch: int, rank: int, world_size: int) -> tuple[int, int]:
    """(start index, local batch size) of `rank`; the remainder goes to the first ranks."""
    if global_batch < world_size:
        raise ConfigError(
            f"batch size {global_batch} is smaller than the number of processes {world_size}; "
            "raise it with --set batch_size=N or use fewer processes"
        )
    base, rest = divmod(global_batch, world_size)
    sizes = [base + (1 if r < rest else 0) for r in range(world_size)]
    return sum(sizes[:rank]), sizes[rank]


def rank_oversampling(global_batch: int, fraction: float, rank: int, world_size: int) -> float:
    """Oversampling fraction of `rank` such that its forced-foreground samples are its slice of the global pattern."""
    start, size = split_batch(global_batch, rank, world_size)
    first_forced = round(global_batch * (1 - fraction))
    forced = sum(1 for j in range(start, start + size) if j >= first_forced)
    return forced / size


def wrap_model(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    if not info.enabled:
        return model

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def weights_max_diff(model: torch.nn.Module, info: DistInfo) -> float:
    """Largest absolute difference of any parameter between this rank and the mean over ranks (0 when in sync)."""
    worst = 0.0
    for p in unwrap(model).state_dict().values():
        if not torch.is_floating_point(p):
            continue
        mean = all_reduce_sum(p.detach().clone().float(), info) / info.world_size
        worst = max(worst, float((p.float() - mean).abs().max()) if p.numel() else 0.0)
    if info.enabled:
        t = torch.tensor([worst])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        worst = float(t)
    return worst
