"""Seconds per training step (one fixed batch, no data loading) with each training-step switch of `TrainConfig`
(`autoseg.training.step_options`), to decide on a GPU which of them to turn on by default.

    python benchmarks/step_switches.py WORKSPACE DATASET CONFIGURATION [--device cuda] [--iterations 30]
        [--warmup 5] [--switches baseline bfloat16 ...] [--batch-size B]

The configuration must be preprocessed. Each switch builds the trainer's network, optimizer and step exactly as
`autoseg train --set ...` does, runs `--warmup` steps (compilation and cuDNN autotuning happen there; their seconds
are printed too) and times `--iterations` more, synchronising the device only around the timed block.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from autoseg.device import resolve_device
from autoseg.planning.plans import Plans
from autoseg.training.config import TrainConfig, apply_overrides
from autoseg.training.context import fold_context
from autoseg.training.loop import _next_batch, train_step
from autoseg.training.trainer import trainers
from autoseg.workspace import Workspace

SWITCHES = {
    "baseline": {},  # nnU-Net's: float16 autocast and cuDNN autotuning on CUDA, plain fp32 on CPU
    "fp32": {"amp": False},
    "no_cudnn_benchmark": {"cudnn_benchmark": False},
    "bfloat16": {"amp_dtype": "bfloat16"},
    "channels_last": {"channels_last": True},
    "compile": {"compile": "inductor"},
    "channels_last+compile": {"channels_last": True, "compile": "inductor"},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_switch(fc, device: torch.device, overrides: dict, iterations: int, warmup: int, batch_size: int) -> dict:
    """Warm-up and per-step seconds of the training step with `overrides`, and peak GPU memory (CUDA)."""
    cfg = apply_overrides(TrainConfig(validate_at_end=False, batch_size=batch_size), overrides)
    torch.manual_seed(cfg.seed)
    trainer = trainers.get("default")(fc, cfg, device, 0, False)
    trainer._setup()  # the network, optimizer, scaler and step context of a training run with these settings
    ctx = trainer.ctx
    train_iter, val_iter = trainer.build_loaders()
    try:
        batch = next(train_iter)
    finally:
        train_iter.close()
        val_iter.close()
    data, targets, _ = _next_batch(iter([batch]), device, ctx.memory_format)
    ctx.model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    for _ in range(warmup):
        train_step(ctx, data, targets)
    _sync(device)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(iterations):
        loss = train_step(ctx, data, targets)
    _sync(device)
    step = (time.perf_counter() - start) / iterations
    peak = torch.cuda.max_memory_allocated(device) / 1024**3 if device.type == "cuda" else None
    return {"warmup_seconds": warm, "seconds_per_step": step, "peak_gpu_memory_gb": peak, "last_loss": float(loss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace")
    parser.add_argument("dataset")
    parser.add_argument("configuration")
    parser.add_argument("--device", default=None)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=0, help="0 = the plans' batch size")
    parser.add_argument("--switches", nargs="*", default=list(SWITCHES), choices=list(SWITCHES))
    args = parser.parse_args()
    device = resolve_device(args.device)
    ws = Workspace.at(args.workspace)
    name = ws.resolve(args.dataset)
    fc = fold_context(ws, name, Plans.load(ws.plans_file(name)), args.configuration, "all", "default", write=False)
    rows = []
    for switch in args.switches:
        try:
            row = time_switch(fc, device, SWITCHES[switch], args.iterations, args.warmup, args.batch_size)
        except Exception as exc:  # one failing switch (e.g. no compiler for inductor) must not hide the others
            row = {"error": f"{type(exc).__name__}: {exc}"}
        rows.append({"switch": switch, **row})
        if "error" in row:
            print(f"{switch:24s} failed: {row['error'][:200]}", flush=True)
        else:
            peak = f"{row['peak_gpu_memory_gb']:.2f} GB" if row["peak_gpu_memory_gb"] is not None else "-"
            print(
                f"{switch:24s} {1000 * row['seconds_per_step']:8.1f} ms/step  warm-up {row['warmup_seconds']:6.1f} s  "
                f"peak {peak}",
                flush=True,
            )
    print(json.dumps({"device": str(device), "configuration": args.configuration, "rows": rows}))


if __name__ == "__main__":
    main()
