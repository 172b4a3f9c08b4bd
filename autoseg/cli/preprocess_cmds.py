"""Commands: preprocess, plan_and_preprocess."""

from __future__ import annotations

from autoseg.workspace import Workspace


def _common_args(p) -> None:
    p.add_argument("-d", "--dataset", required=True, help="dataset id: 4, 004 or Dataset004_Name")
    p.add_argument(
        "-c",
        "--configurations",
        nargs="+",
        metavar="CONFIG",
        help="configurations to preprocess (default: all in the plans)",
    )
    p.add_argument("-j", "--jobs", type=int, default=2, help="worker processes (fewer if memory is short)")
    p.add_argument("--overwrite", action="store_true", help="recompute cases that are already preprocessed")


def add_parsers(sub, common, fmt) -> None:
    p = sub.add_parser(
        "preprocess",
        parents=[common],
        formatter_class=fmt,
        help="crop, normalise and resample every training case for the planned configurations",
        description=(
            "Per case: transpose to the plans' axis order, crop to the nonzero region, normalise each channel,\n"
            "resample to the configuration's spacing and store foreground locations, under\n"
            "preprocessed/DatasetXXX_Name/<data_identifier>/. Interrupted runs resume: complete cases are\n"
            "skipped unless --overwrite. Ground-truth labels are copied to gt_segmentations/."
        ),
        epilog="example: autoseg preprocess -d 4 -c 3d_fullres -j 2",
    )
    _common_args(p)
    p.add_argument("--plans", default="default", help="plans name (plans.json or plans_<NAME>.json)")
    p.set_defaults(handler=run_preprocess)

    p = sub.add_parser(
        "plan_and_preprocess",
        parents=[common],
        formatter_class=fmt,
        help="verify -> fingerprint -> plan -> preprocess in one go",
        description=(
            "Checks the raw dataset, extracts its fingerprint, plans every configuration and preprocesses\n"
            "them (all planned configurations unless -c names some)."
        ),
        epilog="example: autoseg plan_and_preprocess -d 4 -j 2 --gpu-memory 8",
    )
    _common_args(p)
    p.add_argument("--gpu-memory", type=float, default=None, metavar="GB", help="GPU memory budget (default 8)")
    p.add_argument("--preset", default=None, help="planner preset, e.g. resenc-m, resenc-l, resenc-xl")
    p.set_defaults(handler=run_plan_and_preprocess)


def _print_report(pre) -> None:
    for ident, folder in pre.folders.items():
        print(f"{ident}: {folder}")
    print(f"{pre.processed} case(s) preprocessed, {pre.skipped} already done, {pre.jobs} job(s)")


def run_preprocess(args, ws: Workspace) -> int:
    from autoseg.planning.plans import Plans
    from autoseg.preprocessing.preprocess import preprocess_dataset

    name = ws.resolve(args.dataset)
    plans = Plans.load(ws.plans_file(name, args.plans))
    pre = preprocess_dataset(ws, name, plans, args.configurations, jobs=max(1, args.jobs), overwrite=args.overwrite)
    _print_report(pre)
    return 0


def run_plan_and_preprocess(args, ws: Workspace) -> int:
    from autoseg.preprocessing.pipeline import plan_and_preprocess

    res = plan_and_preprocess(
        ws, args.dataset, args.configurations, max(1, args.jobs), args.gpu_memory, args.preset, overwrite=args.overwrite
    )
    print(f"wrote {res.fingerprint_file}\nwrote {res.plans_file} ({', '.join(res.configurations)})")
    _print_report(res.preprocess)
    return 0
