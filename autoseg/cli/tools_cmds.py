"""Commands: overlay, benchmark."""

from __future__ import annotations

from autoseg.workspace import Workspace


def add_parsers(sub, common, fmt) -> None:
    p = sub.add_parser(
        "overlay",
        parents=[common],
        formatter_class=fmt,
        help="PNG pictures of image slices with label (and prediction) contours, for quality control",
        description=(
            "Writes DIR/<case>.png per case: the axis-0 slice with the most foreground and, for 3D images, the\n"
            "slices through the foreground along the other two axes, with the reference label contours (solid)\n"
            "and, with --pred, the predicted contours (dashed). Intensities are windowed between the 0.5th and\n"
            "99.5th percentile; pixels keep their physical aspect ratio. With --pred, every case predicted in\n"
            "PRED_DIR (training or imagesTs) is drawn; without it, the labelled training cases."
        ),
        epilog="example: autoseg overlay -d 4 -o qc/ -n 5 --pred predictions/",
    )
    p.add_argument("-d", "--dataset", required=True, help="dataset id: 4, 004 or Dataset004_Name")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the PNG files")
    p.add_argument("--cases", nargs="+", metavar="CASE", help="case ids to draw (default: all)")
    p.add_argument("--pred", metavar="PRED_DIR", help="folder of predicted segmentations to draw as dashed contours")
    p.add_argument("-n", "--max-cases", type=int, default=None, metavar="MAX", help="draw at most MAX cases")
    p.add_argument("--axis0-only", action="store_true", help="one panel (axis 0) instead of three for 3D images")
    p.add_argument("--size", type=int, default=512, metavar="PX", help="height and width of each panel in pixels")
    p.set_defaults(handler=run_overlay)

    p = sub.add_parser(
        "benchmark",
        parents=[common],
        formatter_class=fmt,
        help="measure data loading, training and inference speed and GPU memory on this machine",
        description=(
            "On the preprocessed data of one configuration: batches/s of the data pipeline alone, seconds per\n"
            "training iteration with data loading and with one fixed batch (the difference is time spent\n"
            "waiting for data), peak GPU memory against the planner's estimate (CUDA only), and sliding-window\n"
            "seconds of one case with and without mirror TTA. Prints a table, writes JSON with -o, and\n"
            "extrapolates the wall time of a full training (1000 epochs x 250 iterations).\n"
            "Needs `autoseg plan_and_preprocess -d N` first."
        ),
        epilog="example: autoseg benchmark -d 4 -c 3d_fullres --iterations 20 -j 2 -o bench.json",
    )
    p.add_argument("-d", "--dataset", required=True, help="dataset id: 4, 004 or Dataset004_Name")
    p.add_argument("-c", "--configuration", required=True, metavar="CONFIG", help="e.g. 2d or 3d_fullres")
    p.add_argument("--plans", default="default", help="plans name (plans.json or plans_<NAME>.json)")
    p.add_argument("--iterations", type=int, default=20, help="timed iterations per measurement")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument(
        "-j",
        "--num-workers",
        type=int,
        default=None,
        metavar="WORKERS",
        help="data-loading processes (default: cores - 1)",
    )
    p.add_argument("--trainer", default="default", help="registered trainer class whose network/loaders to time")
    p.add_argument(
        "--step-ms",
        type=float,
        default=None,
        metavar="MS",
        help="training step time (ms) for the CPU cores each pipeline needs (default: the step measured here)",
    )
    p.add_argument("-o", "--output", metavar="JSON", help="write the measurements to this JSON file")
    p.set_defaults(handler=run_benchmark)


def run_overlay(args, ws: Workspace) -> int:
    from autoseg.evaluation.overlay import overlay_dataset

    files = overlay_dataset(
        ws, args.dataset, args.output, args.cases, args.pred, args.max_cases, not args.axis0_only, args.size
    )
    print(f"wrote {len(files)} PNG file(s) to {args.output}")
    return 0


def run_benchmark(args, ws: Workspace) -> int:
    from autoseg.benchmark import format_table, run_benchmark, save_benchmark

    result = run_benchmark(
        ws, args.dataset, args.configuration, args.plans, args.iterations, args.device, args.num_workers, args.trainer,
        step_ms=args.step_ms,
    )  # fmt: skip
    print(format_table(result))
    if args.output:
        print(f"wrote {save_benchmark(result, args.output)}")
    return 0
