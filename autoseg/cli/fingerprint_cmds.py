"""Commands: fingerprint."""

from __future__ import annotations

from autoseg.workspace import Workspace


def add_parsers(sub, common, fmt) -> None:
    p = sub.add_parser(
        "fingerprint",
        parents=[common],
        formatter_class=fmt,
        help="extract the dataset fingerprint (spacings, shapes after crop, intensities, label volumes)",
        description=(
            "Reads every training case of raw/DatasetXXX_Name, crops it to its nonzero region and records spacing,\n"
            "shapes, label volumes and foreground intensity samples. Writes preprocessed/DatasetXXX_Name/\n"
            "fingerprint.json and fingerprint_cases.csv. The same data and seed always give the same JSON."
        ),
        epilog="example: autoseg fingerprint -d 4 -j 2",
    )
    p.add_argument("-d", "--dataset", required=True, help="dataset id: 4, 004 or Dataset004_Name")
    p.add_argument("-j", "--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--seed", type=int, default=1234, help="seed of the foreground intensity sampling")
    p.set_defaults(handler=run_fingerprint)


def _fmt(values) -> str:
    return " x ".join(f"{float(v):g}" for v in values)


def run_fingerprint(args, ws: Workspace) -> int:
    from autoseg.fingerprint.extract import fingerprint_dataset

    name = ws.resolve(args.dataset)
    fp, json_path, csv_path = fingerprint_dataset(ws, name, jobs=max(1, args.jobs), seed=args.seed)
    print(
        f"{name}: {len(fp.cases)} cases, median spacing (z,y,x) {_fmt(fp.median_spacing)} mm, "
        f"median shape after crop {_fmt(fp.median_shape_after_crop)}, "
        f"median relative size after crop {fp.median_relative_size_after_cropping:.3f}"
    )
    for ch, st in zip(fp.channel_names, fp.intensity):
        print(
            f"  channel {ch}: foreground p0.5 {st.percentile_00_5:g}, median {st.median:g}, "
            f"p99.5 {st.percentile_99_5:g}, mean {st.mean:.4g}, std {st.std:.4g}"
        )
    print(f"wrote {json_path}\nwrote {csv_path}")
    return 0
