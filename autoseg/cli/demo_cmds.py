"""Command: demo (the whole pipeline on a generated CT-like dataset)."""

from __future__ import annotations

import dataclasses

from autoseg.workspace import Workspace


def add_parsers(sub, common, fmt) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        formatter_class=fmt,
        help="run the whole pipeline on a generated CT-like dataset",
        description="Generate a deterministic synthetic CT dataset (body, two organs, anisotropic spacing, some "
        "oblique cases), then verify, fingerprint, plan, preprocess, train fold 0 with a short schedule, predict "
        "the held-out cases and evaluate them. Prints the Dice per organ and where every output lies.",
        epilog="examples:\n  autoseg demo --workspace ./demo_workspace\n  autoseg demo --fast --device cpu --workspace "
        "./demo_fast\nRunning it again in the same workspace reuses the data, preprocessed cases and training run; "
        "--fast and a full run need separate workspaces.",
    )
    p.add_argument("--fast", action="store_true", help="smaller data and schedule (a smoke test, about a minute)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    p.add_argument(
        "--augmentation",
        default="default",
        help="training augmentation pipeline, e.g. batchgenerators (the reference) to compare with the default; "
        "each pipeline needs its own workspace",
    )
    p.set_defaults(handler=_demo)


def _demo(args, ws: Workspace) -> int:
    from autoseg.demo import run_demo
    from autoseg.demo_stages import DemoSettings

    settings = DemoSettings.fast() if args.fast else DemoSettings()
    settings = dataclasses.replace(settings, augmentation=args.augmentation)
    result = run_demo(ws, settings, device=args.device)
    print(f"\nautoseg demo on {result.dataset}: Dice on the held-out cases")
    for organ, dice in result.dice.items():
        print(f"  {organ:<24} {dice:.3f}")
    print(f"  {'mean':<24} {sum(result.dice.values()) / len(result.dice):.3f}")
    total = sum(result.seconds.values())
    print(f"\nstage times (s, {total:.0f} in all): " + ", ".join(f"{k} {v}" for k, v in result.seconds.items()))
    print("\noutputs:")
    for what, path in result.outputs.items():
        print(f"  {what:<14} {path}")
    return 0
