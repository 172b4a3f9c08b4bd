"""Commands: plan."""

from __future__ import annotations

import argparse

from autoseg.workspace import Workspace

DESCRIPTION = """\
Plans every configuration (2d; 3d_fullres for 3D data; 3d_lowres + 3d_cascade_fullres when the 3d_fullres patch
covers < 25 % of the median image) from the dataset fingerprint alone, with nnU-Net v2's rules: target spacing,
axis order, normalisation, patch and batch size for a GPU memory budget, and the U-Net topology.

  autoseg plan -d N               reads preprocessed/DatasetXXX/fingerprint.json, writes plans.json
                                  (plans_NAME.json for --name NAME, a preset or a non-default --gpu-memory)
  autoseg plan --fingerprint F    plans from any fingerprint file, also nnU-Net's dataset_fingerprint.json
                                  (with its dataset.json beside it); -o PLANS_JSON writes the plans"""


class _NoWorkspace(argparse.Action):
    """--fingerprint FILE: store it and tell the CLI that no workspace is used (no default-workspace notice)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.needs_workspace = False


def add_parsers(sub, common, fmt) -> None:
    p = sub.add_parser(
        "plan",
        parents=[common],
        formatter_class=fmt,
        help="rule-based experiment planning: fingerprint -> plans.json",
        description=DESCRIPTION,
        epilog=(
            "examples:\n  autoseg plan -d 4 --explain\n  autoseg plan -d 4 --preset resenc-l\n"
            "  autoseg plan -d 4 --set 3d_fullres.batch_size=4 --set 3d_fullres.patch_size=[64,64,64] --name bs4\n"
            "  autoseg plan --fingerprint nnUNet_preprocessed/Dataset004_Hippocampus/dataset_fingerprint.json"
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-d", "--dataset", help="dataset id: 4, 004 or Dataset004_Name")
    src.add_argument(
        "--fingerprint",
        action=_NoWorkspace,
        metavar="FILE",
        help="plan from this fingerprint file (no workspace needed)",
    )
    p.add_argument("-o", "--output", metavar="PLANS_JSON", help="with --fingerprint: write the plans here")
    p.add_argument("--gpu-memory", type=float, metavar="GB", help="GPU memory budget (default: 8, or the preset's)")
    p.add_argument("--preset", choices=("resenc-m", "resenc-l", "resenc-xl"), help="residual-encoder U-Net preset")
    p.add_argument("--planner", default="default", help="registered planner name (plugins may add planners)")
    p.add_argument("--explain", action="store_true", help="print every decision with the rule and numbers behind it")
    p.add_argument("--set", action="append", default=[], metavar="CFG.FIELD=VALUE", help="override a planned value")
    p.add_argument("--name", help="plans name (default: 'default'; the preset name; or e.g. '24gb')")
    p.add_argument(
        "--transfer-plans-from",
        metavar="DATASET_OR_PLANS_JSON",
        help="with -d: take architecture, patch and batch size from this dataset's plans (or plans file), spacing "
        "and normalisation from -d's own; for fine-tuning with `autoseg train --pretrained` "
        "(default name: from_<SourceDataset>)",
    )
    p.add_argument("--source-plans", default="default", help="with --transfer-plans-from: the source's plans name")
    p.set_defaults(handler=run_plan)


def plans_name(args: argparse.Namespace) -> str:
    """--name, else derived from the planner / preset / budget so that variants never overwrite the default plans."""
    from autoseg.errors import ConfigError
    from autoseg.planning.explain import fmt

    if args.name:
        return args.name
    if args.set:
        raise ConfigError("--set writes a named plans variant: add --name NAME (e.g. --name bs4)")
    base = "_".join(n for n in (args.planner if args.planner != "default" else None, args.preset) if n)
    if args.gpu_memory is not None:
        return f"{base + '_' if base else ''}{fmt(args.gpu_memory)}gb"
    return base or "default"


def run_plan(args, ws: Workspace) -> int:
    if args.transfer_plans_from:
        return run_transfer(args, ws)
    from autoseg.cli.common import parse_set
    from autoseg.planning.explain import plans_table
    from autoseg.planning.planner import plan_and_save

    name, overrides = plans_name(args), parse_set(args.set)
    src = args.fingerprint or ws.fingerprint_file(ws.resolve(args.dataset))
    out = args.output if args.fingerprint else ws.plans_file(ws.resolve(args.dataset), name)
    plans, why = plan_and_save(src, out, args.planner, args.gpu_memory, args.preset, name, overrides)
    print("\n".join(f"  - {w}" for w in why) if args.explain else "", end="\n" if args.explain else "")
    print(f"plans {plans.name!r} for {plans.dataset} ({plans.planner}, {plans.gpu_memory_gb:g} GB):")
    print(plans_table(plans))
    print(f"wrote {out}" if out else "not written (pass -o PLANS_JSON to write the plans)")
    return 0


def run_transfer(args, ws: Workspace) -> int:
    from pathlib import Path

    from autoseg.errors import ConfigError
    from autoseg.planning.explain import plans_table
    from autoseg.planning.planner import plan_and_save
    from autoseg.planning.transfer import default_transfer_name, transfer_and_save

    if args.dataset is None or args.set:
        raise ConfigError("--transfer-plans-from needs -d TARGET and takes no --set (edit the result with --set later)")
    source = args.transfer_plans_from
    if source.endswith(".json"):
        source_file, source_name = Path(source), Path(source).parent.name
    else:
        source_name = ws.resolve(source)
        source_file = ws.plans_file(source_name, args.source_plans)
    if not source_file.is_file():
        raise ConfigError(f"{source_file}: source plans not found; plan the source with `autoseg plan -d {source}`")
    target_name = ws.resolve(args.dataset)
    own, _ = plan_and_save(ws.fingerprint_file(target_name), None, args.planner, args.gpu_memory, args.preset)
    name = args.name or default_transfer_name(source_name, args.source_plans)
    out = ws.plans_file(target_name, name)
    plans, notes = transfer_and_save(source_file, own, name, out)
    print("\n".join(f"  - {n}" for n in notes))
    print(f"plans {plans.name!r} for {plans.dataset} (transferred from {source_file}):")
    print(plans_table(plans))
    print(f"wrote {out}")
    return 0
