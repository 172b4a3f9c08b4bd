"""Per-forward speed of the CPU backends against torch, on the plans' own networks (docs/inference.md).

    python benchmarks/backend_forward.py PLANS.json:CONFIG [PLANS.json:CONFIG ...] [--batch 1 8] [--repeats 5]

For each network (built from the plans, seeded random weights: speed does not depend on the values) and batch size:
one untimed warm-up call per backend, then `--repeats` timed calls; prints min and median ms per forward, the
speed-up over torch (medians) and the max abs difference of the logits to torch's on the same input. Threads: the
cores autoseg may use (autoseg.resources.usable_cores) for every backend. Run it under the heavy lock.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from autoseg.inference.backends.choice import load_backend
from autoseg.inference.backends.onnx_file import FullResolution, export_onnx
from autoseg.networks.build import build_network
from autoseg.planning.plans import Plans
from autoseg.resources import usable_cores


def timed(fn, x, repeats: int) -> tuple[list[float], torch.Tensor]:
    out = fn(x)  # warm-up (and OpenVINO's compilation for this shape)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(x)
        times.append((time.perf_counter() - start) * 1000)
    return times, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="+", help="PLANS.json:CONFIGURATION")
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--classes", type=int, default=None, help="output classes (default: from the plans' dataset)")
    args = parser.parse_args()
    threads = usable_cores()
    torch.set_num_threads(threads)
    print(f"threads {threads}, torch {torch.__version__}; ms per forward: min / median of {args.repeats}")
    print("| network | batch | torch | onnxruntime | openvino |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.networks:
            path, _, name = item.rpartition(":")
            plans = Plans.load(path)
            cfg = plans.configuration(name)
            channels = len(cfg.normalization)
            classes = args.classes or 3
            torch.manual_seed(0)
            net = FullResolution(build_network(cfg.network, channels, classes, False)).eval()
            onnx = export_onnx(net.net, channels, cfg.patch_size, Path(tmp) / f"{plans.dataset}_{name}.onnx")
            runners = {b: load_backend(b).build(onnx, threads) for b in ("onnxruntime", "openvino")}
            label = f"{plans.dataset} {name} {' x '.join(map(str, cfg.patch_size))}, {channels} ch, {classes} cl"
            for batch in args.batch:
                x = torch.randn((batch, channels, *cfg.patch_size), generator=torch.Generator().manual_seed(1))
                with torch.inference_mode():
                    t_ref, ref = timed(net, x, args.repeats)
                    cells = [f"{min(t_ref):.0f} / {statistics.median(t_ref):.0f} ms"]
                    for runner in runners.values():
                        t, out = timed(runner, x, args.repeats)
                        diff = float((out - ref).abs().max())
                        speed = statistics.median(t_ref) / statistics.median(t)
                        cells.append(f"{min(t):.0f} / {statistics.median(t):.0f} ms ({speed:.2f}x), diff {diff:.0e}")
                print(f"| {label} | {batch} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
