"""nnU-Net v2 trained models run by nnU-Net itself and by autoseg: same output? how fast? how much memory?

Usage (nnU-Net installed in its own venv, never an autoseg dependency)::

    flock /tmp/autoseg-heavy.lock python benchmarks/nnunet_models.py --images imagesTs --out /tmp/bench \\
        --model RESULTS/Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres --folds 0 --rounds 3

For every TTA setting (--tta on / off / both) and round, both tools predict the same images with the same model
folder(s), folds and settings (step 0.5, the checkpoint's mirror axes), in alternating order (round 1 nnU-Net first,
round 2 autoseg first, ...). Each run is timed (wall clock of the whole command, start-up included) and its peak
memory is the largest sum of the RSS of the command's whole process tree (sampled every 20 ms from /proc, so
nnU-Net's preprocessing and export worker processes count). nnU-Net runs ``nnUNetv2_predict_from_modelfolder``
(several folders: each with --save_probabilities, then ``nnUNetv2_ensemble``); autoseg runs ``autoseg predict
--nnunet-model``. The first round's outputs are compared case by case: Dice per foreground label between the two
tools' segmentations (a label absent from both counts 1), and size, spacing, origin and direction must be equal.
Prints one JSON object per setting and writes them to OUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(root: int) -> int:
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss(pid)
        todo += _children(pid)
    return total


def _kill_tree(root: int) -> None:
    todo, found = [root], []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += _children(pid)
    for pid in reversed(found):
        try:
            os.kill(pid, 9)
        except OSError:
            pass


def run_measured(
    commands: list[list[str]], log: Path, memory_limit_gb: float = 0, timeout_s: float = 0
) -> tuple[float, float, str]:
    """(wall seconds, peak process-tree RSS in GB, failure text or "") of running `commands` one after the other;
    `memory_limit_gb` > 0 caps each process's address space (ulimit -v), so running out of memory is a clean
    MemoryError in that tool, not the machine's OOM killer; `timeout_s` > 0 kills the command's process tree after
    that long (a tool that hangs after a worker died)."""
    start, peak = time.perf_counter(), 0
    with open(log, "w") as fh:
        for cmd in commands:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            if memory_limit_gb > 0:
                cmd = ["bash", "-c", f'ulimit -v {int(memory_limit_gb * 1024**2)} && exec "$@"', "run", *cmd]
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                peak = max(peak, tree_rss(proc.pid))
                if timeout_s and time.perf_counter() - start > timeout_s:
                    _kill_tree(proc.pid)
                time.sleep(0.02)
            if proc.returncode != 0:
                fh.flush()
                tail = log.read_text(errors="replace").strip().splitlines()[-12:]
                return time.perf_counter() - start, peak / 1e9, f"exit {proc.returncode}: " + " | ".join(tail)
    return time.perf_counter() - start, peak / 1e9, ""


def nnunet_commands(args, out: Path, tta: bool) -> list[list[str]]:
    bin_dir = Path(args.nnunet_bin)
    common = ["-f", *args.folds, "-device", "cpu", "-chk", args.checkpoint, *args.extra_nnunet]
    common += [] if tta else ["--disable_tta"]
    if len(args.model) == 1:
        return [[str(bin_dir / "nnUNetv2_predict_from_modelfolder"), "-i", args.images, "-o", str(out), "-m",
                 args.model[0], *common]]  # fmt: skip
    parts = [out.parent / f"{out.name}_member{i}" for i in range(len(args.model))]
    cmds = [[str(bin_dir / "nnUNetv2_predict_from_modelfolder"), "-i", args.images, "-o", str(p), "-m", m, *common,
             "--save_probabilities"] for p, m in zip(parts, args.model)]  # fmt: skip
    return cmds + [[str(bin_dir / "nnUNetv2_ensemble"), "-i", *map(str, parts), "-o", str(out), "-np", "2"]]


def autoseg_commands(args, out: Path, tta: bool) -> list[list[str]]:
    cmd = [sys.executable, "-m", "autoseg", "predict", "-i", args.images, "-o", str(out), "--nnunet-model",
           *args.model, "-f", *args.folds, "--device", "cpu", "--backend", args.backend, "--checkpoint",
           args.checkpoint, *args.extra_autoseg]  # fmt: skip
    return [cmd + ([] if tta else ["--disable-tta"])]


def compare(a: Path, b: Path, ending: str) -> dict:
    dice, geometry_equal, cases = [], True, sorted(p.name for p in a.glob(f"*{ending}"))
    if cases != sorted(p.name for p in b.glob(f"*{ending}")) or not cases:
        raise SystemExit(f"{a} and {b} hold different cases")
    for name in cases:
        ia, ib = sitk.ReadImage(str(a / name)), sitk.ReadImage(str(b / name))
        same = (ia.GetSize() == ib.GetSize() and ia.GetSpacing() == ib.GetSpacing()
                and ia.GetOrigin() == ib.GetOrigin() and ia.GetDirection() == ib.GetDirection())  # fmt: skip
        geometry_equal &= same
        sa, sb = sitk.GetArrayFromImage(ia), sitk.GetArrayFromImage(ib)
        per_label = []
        for label in sorted(set(np.unique(sa)) | set(np.unique(sb)) - {0}):
            x, y = sa == label, sb == label
            per_label.append(2 * np.count_nonzero(x & y) / (np.count_nonzero(x) + np.count_nonzero(y)))
        dice.append(float(np.mean(per_label)) if per_label else 1.0)
    identical = int(sum(d == 1.0 for d in dice))
    return {"cases": len(cases), "dice_min": min(dice), "dice_mean": float(np.mean(dice)),
            "identical_cases": identical, "geometry_identical": bool(geometry_equal)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--model", nargs="+", required=True, help="nnU-Net trained-model folder(s)")
    ap.add_argument("--folds", nargs="+", default=["0"])
    ap.add_argument("--checkpoint", default="checkpoint_final.pth")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tta", choices=("on", "off", "both"), default="both")
    ap.add_argument("--backend", default="torch", help="autoseg's --backend (torch: the same engine as nnU-Net)")
    ap.add_argument("--nnunet-bin", default="/work/nnunet_venv/bin")
    ap.add_argument("--ending", default=".nii.gz")
    ap.add_argument("--memory-limit-gb", type=float, default=0, help="ulimit -v per process (0: none)")
    ap.add_argument("--timeout-s", type=float, default=0, help="kill a run after this long (0: never)")
    ap.add_argument("--extra-nnunet", nargs="*", default=[], help="more nnUNetv2_predict_from_modelfolder arguments")
    ap.add_argument("--extra-autoseg", nargs="*", default=[], help="more `autoseg predict` arguments (e.g. -v)")
    ap.add_argument("--only", choices=("both", "autoseg"), default="both", help="autoseg alone: no comparison")
    args = ap.parse_args()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    results = []
    for tta in {"on": [True], "off": [False], "both": [True, False]}[args.tta]:
        times = {"nnunet": [], "autoseg": []}
        peaks = {"nnunet": [], "autoseg": []}
        failures = {}
        for r in range(args.rounds):
            order = ["nnunet", "autoseg"] if r % 2 == 0 else ["autoseg", "nnunet"]
            order = order if args.only == "both" else ["autoseg"]
            for tool in order:
                out = root / f"{tool}_tta{'on' if tta else 'off'}_r{r}"
                cmds = (nnunet_commands if tool == "nnunet" else autoseg_commands)(args, out, tta)
                wall, peak, failed = run_measured(cmds, root / f"{out.name}.log", args.memory_limit_gb, args.timeout_s)
                times[tool].append(round(wall, 2))
                peaks[tool].append(round(peak, 2))
                if failed:
                    failures[tool] = failed
                print(f"tta {'on' if tta else 'off'} round {r + 1} {tool}: {wall:.1f} s, peak {peak:.2f} GB"
                      + (f", FAILED {failed}" if failed else ""), flush=True)  # fmt: skip
        tag = "on" if tta else "off"
        pair = (root / f"nnunet_tta{tag}_r0", root / f"autoseg_tta{tag}_r0")
        agreement = {} if failures or args.only != "both" else compare(*pair, args.ending)
        row = {"models": [Path(m).name for m in args.model], "folds": args.folds, "tta": tta, **agreement,
               "wall_s": times, "peak_rss_gb": peaks, "backend": args.backend, "failures": failures,
               "speedup_median": round(float(np.median(times["nnunet"]) / np.median(times["autoseg"])), 2)
               if times["nnunet"] else None}  # fmt: skip
        print(json.dumps(row), flush=True)
        results.append(row)
    (root / "summary.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
