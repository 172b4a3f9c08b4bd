"""Commands: predict, select, evaluate, export, install."""

from __future__ import annotations

from autoseg.workspace import Workspace

PREDICT_DESCRIPTION = """\
Segment new images with a trained model.

IN is a folder in the imagesTs layout (CASE_0000.nii.gz, CASE_0001.nii.gz, ... one file per channel) or, for
one-channel models, a single image file or a folder of DICOM files (or of such folders; pip install -e ".[dicom]"):
each image series is one case, named after its folder or PatientID_S<SeriesNumber>; a series whose Modality is not
the model's (MR into a CT model) is an error unless --force-modality. --output-type dicom-seg writes one DICOM-SEG
per series (CASE.dcm: one segment per label present, named as in dataset.json; references the source images).
Every other output keeps the input's size, spacing, origin, direction and file format. The folds of a
configuration are averaged (logits); --ensemble averages the probabilities of the configurations that
`autoseg select` chose and applies the postprocessing it decided on cross-validation.

Without -c: the configuration chosen by `autoseg select`, else 3d_fullres, else 2d. Without -d: the one trained
dataset in the results folder. -m MODEL_DIR predicts with an installed bundle (`autoseg install`).
--fast: one fold, no mirroring, step 0.75 (several times faster, slightly less accurate).
--part K/N predicts every N-th case starting with the K-th, for N workers; --continue skips finished outputs.
-j N export processes resample, postprocess and write a case while the network works on the next one (fewer when
the largest case would not fit memory; -j 1 does everything in one process, with the same outputs).
--backend: on the CPU the network runs in OpenVINO (else ONNX Runtime) when installed (pip install
"autoseg[cpu-fast]"), exported once per fold and cached beside its checkpoint; torch on a GPU or when neither is
installed or the export fails (a one-line note says so). --backend torch forces torch.
--precision: fp16 autocast on a GPU and fp32 on the CPU by default (nnU-Net's choices); --precision bf16 runs the
convolutions in bfloat16 on the CPU (OpenVINO or torch), faster on CPUs with bf16 instructions at a small cost in
agreement (docs/inference.md).
--statistics also writes OUT/statistics.csv: one row per case and foreground label (names from the model's
dataset.json) with the voxel count, the volume in ml (area in mm^2 for 2D images) and the mean intensity of every
input channel inside the label; with --continue the skipped cases are read back, so the table covers every case.
"""

EVALUATE_DESCRIPTION = """\
Score segmentations against references: per case and label Dice, IoU, precision, recall, HD95 (mm), normalised
surface Dice at --tolerance mm, volumes (ml). Writes metrics_per_case.csv and summary.json to -o (default: the
prediction folder) and prints the per-label means.

NaN rules: both masks empty -> all overlap and distance metrics NaN (left out of the means); empty prediction with
a non-empty reference -> Dice 0, HD95 inf; the reverse -> Dice 0, HD95 inf. Labels come from --labels, else from
the dataset (-d), else from the values found in the references. With -d, a dataset with regions is scored per region
(keys like "1,2") and the voxels of its ignore label are left out of every metric.
"""


def add_parsers(sub, common, fmt) -> None:
    _add_predict(sub, common, fmt)
    p = sub.add_parser(
        "select",
        parents=[common],
        formatter_class=fmt,
        help="choose the best configuration/ensemble and postprocessing on cross-validation",
        description="Compare every fully trained configuration and every pair ensemble on the merged 5-fold "
        "validation predictions (mean foreground Dice), decide postprocessing on the best, write selection.json.",
        epilog="example: autoseg select -d 4",
    )
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    p.add_argument("--plans", default="default", help="plans name")
    p.add_argument("--trainer", default="default", help="trainer name")
    p.add_argument("-j", "--jobs", type=int, default=1, help="evaluation processes")
    p.set_defaults(handler=run_select)

    p = sub.add_parser(
        "evaluate",
        parents=[common],
        formatter_class=fmt,
        help="score a folder of segmentations against references",
        description=EVALUATE_DESCRIPTION,
        epilog="example: autoseg evaluate -r labelsTs -p predictions -d 4",
    )
    p.add_argument("-r", "--reference", required=True, help="folder of reference label files")
    p.add_argument("-p", "--prediction", required=True, help="folder of predicted label files")
    group = p.add_mutually_exclusive_group()
    group.add_argument("-d", "--dataset", default=None, help="take the labels from this dataset")
    group.add_argument("--labels", type=int, nargs="+", default=None, help="foreground labels to score")
    p.add_argument("--tolerance", type=float, default=1.0, metavar="MM", help="surface Dice tolerance in mm")
    p.add_argument("-o", "--output", default=None, help="folder for metrics_per_case.csv and summary.json")
    p.add_argument("-j", "--jobs", type=int, default=1, help="evaluation processes")
    p.set_defaults(handler=run_evaluate)

    p = sub.add_parser(
        "export",
        parents=[common],
        formatter_class=fmt,
        help="write a trained model as a self-contained zip bundle",
        description="Bundle plans, dataset.json, selection, postprocessing and the folds' weights (state dicts "
        "only) into one zip file that `autoseg install` and `autoseg predict -m` use on another machine.",
        epilog="example: autoseg export -d 4 -o hippocampus.zip",
    )
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    p.add_argument("-o", "--output", required=True, help="zip file to write")
    p.add_argument("-c", "--configurations", nargs="+", default=None, help="default: the selection, else all")
    p.add_argument("-f", "--folds", nargs="+", default=None, help="folds to include (default: all finished)")
    p.add_argument("--plans", default="default", help="plans name")
    p.add_argument("--trainer", default="default", help="trainer name")
    p.add_argument("--onnx", action="store_true", help="also each fold's network as ONNX and its contract onnx.json")
    p.set_defaults(handler=run_export)

    p = sub.add_parser(
        "install",
        parents=[common],
        formatter_class=fmt,
        help="install a model bundle zip",
        description="Extract and validate a bundle (no code is unpickled; entries escaping the folder are refused). "
        "Default target: results/<dataset>/bundle, used by `autoseg predict -d N`.",
        epilog="example: autoseg install hippocampus.zip",
    )
    p.add_argument("zip", help="bundle zip file")
    p.add_argument("--to", default=None, help="install into this folder instead (use with predict -m)")
    p.add_argument("--force", action="store_true", help="replace an existing installation")
    p.set_defaults(handler=run_install)


def _add_predict(sub, common, fmt) -> None:
    p = sub.add_parser(
        "predict",
        parents=[common],
        formatter_class=fmt,
        help="segment new images with a trained model",
        description=PREDICT_DESCRIPTION,
        epilog=(
            "examples:\n  autoseg predict -i imagesTs -o predictions -d 4 --ensemble\n"
            "  autoseg predict -i imagesTs -o predictions -d 4 --statistics -j 4"
        ),
    )
    p.add_argument("-i", "--input", required=True, help="input folder (imagesTs layout) or one image file")
    p.add_argument("-o", "--output", required=True, help="output folder (or file name for a single input file)")
    p.add_argument("-d", "--dataset", default=None, help="dataset id or name (default: the only trained one)")
    p.add_argument("-c", "--configuration", default=None, help="configuration (default: from selection)")
    p.add_argument("-f", "--folds", nargs="+", default=None, help="folds (default: all trained)")
    p.add_argument("--ensemble", action="store_true", help="use the selection's ensemble and postprocessing")
    p.add_argument("--fast", action="store_true", help="one fold, no mirroring, step 0.75")
    p.add_argument("--disable-tta", action="store_true", help="no mirror test-time augmentation (~8x faster in 3D)")
    p.add_argument("--step", type=float, default=None, help="sliding-window step as a fraction of the patch [0.5]")
    p.add_argument("--save-probabilities", action="store_true", help="also write <case>.npz (float16)")
    p.add_argument("--no-postprocessing", action="store_true", help="skip the selected postprocessing")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--backend",
        choices=("auto", "torch", "onnxruntime", "openvino"),
        default="auto",
        help="what runs the network on the CPU (auto: OpenVINO, else ONNX Runtime when installed, else torch)",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="precision of the network forward (auto: fp16 on a GPU, fp32 on the CPU; bf16: faster on CPUs with "
        "bf16 instructions, probabilities within a few 1e-2)",
    )
    p.add_argument(
        "--output-type",
        choices=("default", "dicom-seg"),
        default="default",
        help="dicom-seg: one DICOM-SEG per DICOM series (default: the input's format; NIfTI for DICOM input)",
    )
    p.add_argument("--force-modality", action="store_true", help="predict DICOM series of another modality")
    p.add_argument("--part", default="1/1", metavar="K/N", help="predict the K-th of N shares of the cases")
    p.add_argument("--continue", dest="resume", action="store_true", help="skip cases whose output exists")
    p.add_argument(
        "-j",
        "--workers",
        type=int,
        default=None,
        help="export processes (default: 2 with a GPU or more than 4 CPU cores, else 1; fewer if memory is short)",
    )
    p.add_argument(
        "--statistics", action="store_true", help="also write OUT/statistics.csv (volume, mean intensity per label)"
    )
    p.add_argument("-m", "--model", default=None, metavar="MODEL_DIR", help="installed bundle folder")
    p.add_argument(
        "--nnunet-model",
        nargs="+",
        default=None,
        metavar="FOLDER",
        help="nnU-Net v2 trained-model folder(s) <Trainer>__<Plans>__<config> or nnUNetv2_export_model_to_zip zip(s), "
        "read in place (several: configuration ensemble); see docs/inference.md",
    )
    p.add_argument(
        "--checkpoint", default="checkpoint_final.pth", help="checkpoint file in each fold_k (with --nnunet-model)"
    )
    p.add_argument("--plans", default="default", help="plans name")
    p.add_argument("--trainer", default="default", help="trainer name")
    p.set_defaults(handler=run_predict)


def run_predict(args, ws: Workspace) -> int:
    from autoseg.cli.common import parse_folds
    from autoseg.inference.predictor import run_predict as predict

    folds = parse_folds(args.folds, n_folds=1000) if args.folds else None
    if args.nnunet_model:
        return _predict_nnunet(args, folds)
    opts = dict(dataset=args.dataset, configuration=args.configuration, folds=folds, ensemble=args.ensemble)
    opts.update(fast=args.fast, tta=not args.disable_tta, step=args.step, save_probabilities=args.save_probabilities)
    opts.update(device=args.device, part=args.part, resume=args.resume, model_dir=args.model, plans_name=args.plans)
    opts.update(workers=args.workers, statistics=args.statistics, backend=args.backend, precision=args.precision)
    opts.update(force_modality=args.force_modality, output_type=args.output_type)
    written = predict(ws, args.input, args.output, trainer=args.trainer, postprocess=not args.no_postprocessing, **opts)
    print(f"{len(written)} segmentation(s) written to {args.output}")
    return 0


def _predict_nnunet(args, folds) -> int:
    from autoseg.errors import ConfigError
    from autoseg.inference.nnunet_predict import run_predict_nnunet

    chosen = [flag for flag, value in (("-d", args.dataset), ("-c", args.configuration), ("-m", args.model),
              ("--ensemble", args.ensemble), ("--force-modality", args.force_modality)) if value]  # fmt: skip
    chosen += [flag for flag, value, default in (("--plans", args.plans, "default"), ("--trainer", args.trainer,
               "default"), ("--output-type", args.output_type, "default")) if value != default]  # fmt: skip
    if chosen:
        raise ConfigError(f"--nnunet-model: leave out {', '.join(chosen)} (the model folders name the model; "
                          "DICOM input and output are not supported with nnU-Net models yet)")  # fmt: skip
    written = run_predict_nnunet(
        args.input, args.output, args.nnunet_model, folds=folds, checkpoint=args.checkpoint,
        tta=not args.disable_tta, step=args.step, fast=args.fast, save_probabilities=args.save_probabilities,
        device=args.device, part=args.part, resume=args.resume, postprocess=not args.no_postprocessing,
        workers=args.workers, statistics=args.statistics, backend=args.backend, precision=args.precision,
    )  # fmt: skip
    print(f"{len(written)} segmentation(s) written to {args.output}")
    return 0


def run_select(args, ws: Workspace) -> int:
    from autoseg.evaluation.select import select_model, selection_report

    sel = select_model(ws, args.dataset, args.plans, args.trainer, jobs=args.jobs)
    print(selection_report(sel))
    print(f"written: {ws.selection_file(sel.dataset)}")
    return 0


def run_evaluate(args, ws: Workspace) -> int:
    from autoseg.errors import problems_error
    from autoseg.evaluation.metrics import folder_problems, summary_table
    from autoseg.evaluation.select import evaluate_predictions

    if problems := folder_problems(args.reference, args.prediction):  # every bad file named, before any work
        raise problems_error(problems)
    summary, csv_path, json_path = evaluate_predictions(
        ws, args.reference, args.prediction, args.dataset, args.labels, args.output, args.tolerance, args.jobs
    )
    print(f"{summary['num_cases']} case(s); surface Dice tolerance {summary['tolerance_mm']} mm")
    print(summary_table(summary))
    print(f"written: {csv_path}, {json_path}")
    return 0


def run_export(args, ws: Workspace) -> int:
    from autoseg.bundle import export_bundle
    from autoseg.cli.common import parse_folds

    folds = parse_folds(args.folds, n_folds=1000) if args.folds else None
    path = export_bundle(
        ws, args.dataset, args.output, args.configurations, args.plans, args.trainer, folds, onnx=args.onnx
    )
    print(f"bundle written: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def run_install(args, ws: Workspace) -> int:
    from autoseg.bundle import install_bundle

    target = install_bundle(ws, args.zip, args.to, args.force)
    print(f"installed to {target}; predict with: autoseg predict -i IN -o OUT -m {target}")
    return 0
