"""CPU milliseconds per training batch of nnU-Net's own data pipeline (the peer figure beside
`benchmarks/pipeline_cost.py`): its trainer's `get_dataloaders()` with `nnUNet_n_proc_DA=0`, so sampling and
augmentation run in this process, on one thread, and `time.process_time` measures all of it.

Run with the python of the venv that holds nnunetv2 (never a dependency of autoseg), after
`nnUNetv2_plan_and_preprocess -d D -c C`:

    nnUNet_raw=... nnUNet_preprocessed=... nnUNet_results=... \
        NNUNET_VENV/bin/python benchmarks/nnunet_loader_cost.py D C [--fold 0] [--batches 30] [--warmup 10]
        [--step-ms 14.8 54]

Prints the plan's patch and batch size, CPU ms per batch and the cores needed to feed a training step of each
`--step-ms` milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ["nnUNet_n_proc_DA"] = "0"  # read by nnU-Net when the loaders are made: everything in this process
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from nnunetv2.run.run_training import get_trainer_from_args  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("configuration")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10, help="batches before timing (cases opened, caches warm)")
    parser.add_argument("--step-ms", type=float, nargs="*", default=[14.8, 54.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    trainer = get_trainer_from_args(args.dataset, args.configuration, args.fold, device=torch.device("cpu"))
    trainer.initialize()  # batch size, oversampling, label manager (and the network, unused here)
    train_loader, _ = trainer.get_dataloaders()
    for _ in range(args.warmup):
        next(train_loader)
    start = time.process_time()
    for _ in range(args.batches):
        next(train_loader)
    ms = (time.process_time() - start) / args.batches * 1000
    patch = list(trainer.configuration_manager.patch_size)
    cores = ", ".join(f"{ms / s:.2f} cores at {s:g} ms" for s in args.step_ms)
    print(f"nnU-Net {args.dataset} {args.configuration}: patch {patch}, batch {trainer.batch_size}, one thread")
    print(f"  CPU per batch {ms:.1f} ms ({cores})")
    print(json.dumps({"patch_size": patch, "batch_size": trainer.batch_size, "cpu_ms_per_batch": ms}))


if __name__ == "__main__":
    main()
