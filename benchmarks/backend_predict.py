"""Whole-command `predict` timings of the inference backends (and nnU-Net's predictor) on the same cases.

    python benchmarks/backend_predict.py --workspace WS -i IMAGES -o OUT [-f 0] [--rounds 3] [--labels LABELS]
        [--backends openvino onnxruntime torch openvino:bf16] [--tta on|off|both]
        [--nnunet-results DIR --nnunet-dataset 4 --nnunet-fold 0]

Per round and TTA mode (on, off) every command runs once, in alternating order, after one untimed warm-up of each
(the warm-up of a backend includes its one-time ONNX export, reported apart). For each run: wall seconds of the
whole command and the peak memory of its process tree (the sum of the resident sets of the process and all its
children, sampled every 20 ms from /proc). Then: per TTA mode the voxel agreement of each backend's label maps with
torch's, and with --labels the mean Dice per label of each. nnU-Net's `nnUNetv2_predict` (from NNUNET_BIN, default
/work/nnunet_venv/bin) runs with its defaults and with `-npp 1 -nps 1`. A backend written NAME:PRECISION runs with
`--precision PRECISION` (others with the default, auto). Run it under the heavy lock.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from autoseg.data.image_io import read_file


def tree_rss(pid: int) -> int:
    """Bytes resident in `pid` and all its descendants (0 for processes that ended meanwhile)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next((int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return total


def run(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.02)
    took = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return took, peak


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    return 2 * float((x & y).sum()) / max(float(x.sum() + y.sum()), 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", required=True)
    ap.add_argument("-i", "--input", required=True)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("-d", "--dataset", default="4")
    ap.add_argument("-c", "--configuration", default="3d_fullres")
    ap.add_argument("-f", "--fold", default="0")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--labels", default=None)
    ap.add_argument("--backends", nargs="+", default=["openvino", "onnxruntime", "torch"])
    ap.add_argument("--untimed", nargs="*", default=[], help="backends run once, for the agreement only")
    ap.add_argument("--nnunet-results", default=None)
    ap.add_argument("--nnunet-dataset", default="4")
    ap.add_argument("--nnunet-fold", default="0")
    ap.add_argument("--tta", choices=("on", "off", "both"), default="both", help="which TTA settings to time")
    args = ap.parse_args()
    out = Path(args.output)
    commands = {}
    for tta in ("on", "off") if args.tta == "both" else (args.tta,):
        for b in [*args.backends, *args.untimed]:
            name, _, precision = b.partition(":")  # e.g. openvino:bf16
            cmd = ["autoseg", "predict", "--workspace", args.workspace, "-i", args.input, "-d", args.dataset, "-c",
                   args.configuration, "-f", args.fold, "--device", "cpu", "--backend", name,
                   "--precision", precision or "auto"]  # fmt: skip
            commands[(tta, f"autoseg {b}")] = (cmd + (["--disable-tta"] if tta == "off" else []), None)
        if args.nnunet_results:
            nn_bin = os.environ.get("NNUNET_BIN", "/work/nnunet_venv/bin")
            env = dict(os.environ, nnUNet_results=args.nnunet_results, nnUNet_raw="/nonexistent",
                       nnUNet_preprocessed="/nonexistent")  # fmt: skip
            base = [f"{nn_bin}/nnUNetv2_predict", "-i", args.input, "-d", args.nnunet_dataset, "-c",
                    args.configuration, "-f", args.nnunet_fold, "-device", "cpu"]  # fmt: skip
            base += ["--disable_tta"] if tta == "off" else []
            commands[(tta, "nnUNetv2_predict")] = (base, env)
            commands[(tta, "nnUNetv2_predict -npp 1 -nps 1")] = (base + ["-npp", "1", "-nps", "1"], env)
    target = {key: out / f"{key[0]}_{key[1].replace(' ', '_')}" for key in commands}
    for key, (cmd, env) in commands.items():  # warm-up (the ONNX export of a backend happens here, once)
        extra = ["--save-probabilities"] if key[1].startswith("autoseg") else []
        took, _ = run(cmd + ["-o", str(target[key])] + extra, env)
        print(f"warm-up TTA {key[0]:3s} {key[1]:32s} {took:6.1f} s", flush=True)
    timed_keys = [k for k in commands if k[1].removeprefix("autoseg ") not in args.untimed]
    times: dict = {key: [] for key in timed_keys}
    peaks: dict = {key: [] for key in timed_keys}
    for r in range(args.rounds):
        order = timed_keys if r % 2 == 0 else timed_keys[::-1]
        for key in order:
            cmd, env = commands[key]
            took, peak = run(cmd + ["-o", str(target[key])], env)
            times[key].append(took)
            peaks[key].append(peak)
    print(f"\n| TTA | command | s per run ({args.rounds} rounds: min / median) | vs autoseg torch | peak memory |")
    print("| --- | --- | --- | --- | --- |")
    for key in timed_keys if args.rounds else ():
        ref = statistics.median(times[(key[0], "autoseg torch")]) if (key[0], "autoseg torch") in times else None
        med = statistics.median(times[key])
        speed = f"{ref / med:.2f}x" if ref else "-"
        peak = max(peaks[key]) / 2**20
        print(f"| {key[0]} | {key[1]} | {min(times[key]):.1f} / {med:.1f} | {speed} | {peak:.0f} MB |")
    cases = sorted(p.name for p in Path(args.input).iterdir())
    cases = [c.replace("_0000", "") for c in cases]
    print()
    for key in commands:
        segs = {c: read_file(target[key] / c)[0] for c in cases}
        ref_key = (key[0], "autoseg torch")
        line = f"TTA {key[0]:3s} {key[1]:32s}"
        if ref_key in target and key != ref_key:
            same = sum(int((segs[c] == read_file(target[ref_key] / c)[0]).sum()) for c in cases)
            total = sum(segs[c].size for c in cases)
            line += f" agreement with torch {100 * same / total:.4f} % ({total - same} of {total} voxels differ)"
            if key[1].startswith("autoseg"):
                diff = max(float(np.abs(np.load(target[key] / f"{c.split('.')[0]}.npz")["probabilities"].astype(
                    np.float32) - np.load(target[ref_key] / f"{c.split('.')[0]}.npz")["probabilities"]).max())
                    for c in cases)  # fmt: skip
                line += f", max abs probability difference {diff:.1e} (float16 files)"
        if args.labels:
            refs = {c: read_file(Path(args.labels) / c)[0] for c in cases}
            labels = sorted(int(v) for v in np.unique(np.concatenate([r.ravel() for r in refs.values()])) if v > 0)
            means = [np.mean([dice(segs[c], refs[c], lab) for c in cases]) for lab in labels]
            line += "  Dice " + " ".join(f"{lab}:{m:.4f}" for lab, m in zip(labels, means))
        print(line)


if __name__ == "__main__":
    main()
