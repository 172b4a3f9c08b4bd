"""CPU cost of the augmentation pipelines per batch, without training (the part of `autoseg benchmark` that needs no
network): sampling alone, a worker's CPU per batch when a GPU trains, and when the CPU trains.

    python benchmarks/pipeline_cost.py WORKSPACE DATASET CONFIGURATION [--batches N] [--step-ms MS ...]
        [--pipelines default batchgenerators]

The configuration must be preprocessed (`autoseg plan_and_preprocess`). One thread, this process only
(`time.process_time`); the cores needed to feed a training step of each `--step-ms` are printed beside.
"""

from __future__ import annotations

import argparse
import json

import torch

from autoseg.benchmark import PIPELINES, pipeline_costs
from autoseg.planning.plans import Plans
from autoseg.training.context import fold_context
from autoseg.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace")
    parser.add_argument("dataset")
    parser.add_argument("configuration")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--step-ms", type=float, nargs="*", default=[14.8, 54.0])
    parser.add_argument("--pipelines", nargs="*", default=list(PIPELINES), choices=list(PIPELINES))
    args = parser.parse_args()
    ws = Workspace.at(args.workspace)
    name = ws.resolve(args.dataset)
    plans = Plans.load(ws.plans_file(name))
    fc = fold_context(ws, name, plans, args.configuration, "all", "default", write=False)
    batch = fc.configuration.batch_size
    rows = pipeline_costs(fc, batch, torch.device("cpu"), args.batches, None, args.pipelines)
    print(f"{name} {args.configuration}: patch {list(fc.configuration.patch_size)}, batch {batch}, one thread")
    for r in rows:
        cores = ", ".join(f"{r['cpu_ms_per_batch_gpu_training'] / s:.2f} cores at {s:g} ms" for s in args.step_ms)
        print(
            f"  {r['pipeline']:16s} sampling {r['cpu_ms_sampling']:7.1f} ms | worker for GPU training "
            f"{r['cpu_ms_per_batch_gpu_training']:7.1f} ms ({cores}) | worker for CPU training "
            f"{r['cpu_ms_per_batch_cpu_training']:7.1f} ms"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
