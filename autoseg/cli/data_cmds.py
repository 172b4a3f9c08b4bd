"""Commands: verify, convert_msd, convert_dicom."""

from __future__ import annotations

import sys
from pathlib import Path

from autoseg.workspace import Workspace


def add_parsers(sub, common, fmt) -> None:
    p = sub.add_parser(
        "verify",
        parents=[common],
        formatter_class=fmt,
        help="check a raw dataset and report every problem",
        description="Check dataset.json and every training case (files, geometry, label values) of a raw dataset. "
        "All problems are listed, one per line, before the command exits with status 1.",
        epilog="example: autoseg verify -d 4 -j 2",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "-d", "--dataset", help="dataset id or name in the workspace's raw folder (4, 004, Dataset004_X)"
    )
    which.add_argument("--folder", help="verify this dataset folder directly (no workspace lookup)")
    p.add_argument("-j", "--jobs", type=int, default=2, help="parallel worker processes")
    p.set_defaults(handler=run_verify)

    p = sub.add_parser(
        "convert_msd",
        parents=[common],
        formatter_class=fmt,
        help="convert a Medical Segmentation Decathlon task folder into the raw layout",
        description="Convert an MSD task folder (TaskNN_Name with 4D NIfTI images) into raw/DatasetXXX_Name with one "
        "file per channel and an nnU-Net v2 dataset.json. An existing dataset with that id is never overwritten.",
        epilog="example: autoseg convert_msd -i ~/Downloads/Task04_Hippocampus -d 4",
    )
    p.add_argument("-i", "--input", required=True, help="the MSD task folder, e.g. Task04_Hippocampus")
    p.add_argument("-d", "--dataset-id", type=int, default=None, help="id of the new dataset (default: task number)")
    p.add_argument("-j", "--jobs", type=int, default=2, help="parallel worker processes")
    p.set_defaults(handler=run_convert_msd)

    p = sub.add_parser(
        "convert_dicom",
        parents=[common],
        formatter_class=fmt,
        help="turn DICOM series and their masks (DICOM-SEG or NIfTI) into a raw dataset",
        description="Every image series under IN is one case (named as `autoseg predict` names it); its mask is a "
        "DICOM-SEG in IN that references the series (segments matched to --labels by name) or a NIfTI label map "
        "named CASE.nii.gz (or SeriesInstanceUID.nii.gz) that must lie on the series' grid. Series without a mask "
        'go to imagesTs. Every problem is named before anything is written (pip install -e ".[dicom]").',
        epilog="example: autoseg convert_dicom -i exports/ -d 501 --labels liver tumour --name LiverCT",
    )
    p.add_argument("-i", "--input", required=True, help="folder of DICOM series (and their masks)")
    p.add_argument("-d", "--dataset-id", type=int, required=True, help="id of the new dataset (1-999)")
    p.add_argument("--labels", nargs="+", required=True, help="foreground label names, for values 1, 2, ...")
    p.add_argument("--name", default="DICOM", help="dataset name: raw/DatasetXXX_NAME")
    p.set_defaults(handler=run_convert_dicom)


def run_verify(args, ws: Workspace) -> int:
    from autoseg.data.verify import verify_dataset

    folder = Path(args.folder) if args.folder else ws.raw_dataset(ws.resolve(args.dataset))
    report = verify_dataset(folder, jobs=args.jobs)
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if not report.ok:
        print(report.problem_text(), file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def run_convert_msd(args, ws: Workspace) -> int:
    from autoseg.data.msd import convert_msd

    target = convert_msd(args.input, ws.raw, args.dataset_id, jobs=args.jobs)
    print(f"wrote {target}")
    print(f"next: autoseg verify -d {target.name} --workspace {ws.root}")
    return 0


def run_convert_dicom(args, ws: Workspace) -> int:
    from autoseg.data.dicom.convert import convert_dicom

    target = convert_dicom(args.input, ws.raw, args.dataset_id, args.labels, args.name)
    print(f"wrote {target}")
    print(f"next: autoseg verify -d {target.name} --workspace {ws.root}")
    return 0
