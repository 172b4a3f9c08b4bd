"""Commands: train."""

from __future__ import annotations

from pathlib import Path

from autoseg.workspace import Workspace

DESCRIPTION = """\
Train U-Nets with 5-fold cross-validation from the plans and the preprocessed data.

Results go to results/DatasetXXX_Name/<plans>/<configuration>/<trainer>/fold_<k>/ (train_config.json, plans.json,
log.txt, progress.csv, progress.png, checkpoint_latest/best/final.pt, validation/). Every training number can be
changed with --set (names: epochs, iterations_per_epoch, val_iterations_per_epoch, lr, weight_decay, momentum,
oversample_foreground, seed, grad_clip, batch_size, loss, optimizer, deep_supervision, val_tta, ...).

Fine-tuning: --pretrained PATH starts from a trained model's weights (plan the new dataset with
`autoseg plan -d N --transfer-plans-from SOURCE` so the architecture matches); --set lr=..., warmup_epochs=N,
freeze_encoder_epochs=N set its schedule.

--resume continues a killed run from checkpoint_latest.pt exactly where it stopped; with --set epochs=N larger than
before it extends a finished run (the poly learning-rate schedule is recomputed for the new total).

Without -c every configuration is trained, 3d_cascade_fullres right after 3d_lowres: its network also gets the
3d_lowres cross-validation predictions (one-hot, one channel per label), so all 3d_lowres folds must be trained
first (when they are not, the cascade is skipped with a note; with -c 3d_cascade_fullres it is an error).

Multi-GPU / multi-node: torchrun --nproc_per_node=N -m autoseg train ... (the batch is split across processes).
"""


def add_parsers(sub, common, fmt) -> None:
    p = sub.add_parser(
        "train",
        parents=[common],
        formatter_class=fmt,
        help="train the configurations' folds (cross-validation)",
        description=DESCRIPTION,
        epilog="examples:\n  autoseg train -d 4 -c 3d_fullres -f 0..4 --set epochs=100\n"
        "  autoseg train -d 3 -c 3d_lowres 3d_cascade_fullres -f 0..4",
    )
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name (4, 004, Dataset004_Hippocampus)")
    p.add_argument(
        "-c",
        "--configurations",
        nargs="+",
        default=None,
        metavar="CONFIG",
        help="configurations to train (default: all in the plans, the cascade after its previous stage)",
    )
    p.add_argument("-f", "--folds", nargs="+", default=["0..4"], metavar="FOLD", help="folds: 0..4, 0 2 4 or all")
    p.add_argument("--plans", default="default", help="plans name (plans_<NAME>.json)")
    p.add_argument("--trainer", default="default", help="registered trainer name")
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a training setting, e.g. --set epochs=100 (repeatable)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from checkpoint_latest.pt (or extend a finished run)"
    )
    p.add_argument(
        "--pretrained",
        default=None,
        metavar="PATH",
        help="fine-tune: start from these weights (checkpoint, run folder fold_K or installed bundle folder); "
        "tensors matching by name and shape are loaded, heads for other classes re-initialised, the first "
        "convolution adapted to other input channels (same as --set pretrained=PATH)",
    )
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("-j", "--num-workers", type=int, default=None, help="data loading processes per training process")
    p.add_argument(
        "--group-by",
        default=None,
        metavar="CSV_OR_REGEX",
        help="keep a patient's cases in one fold: CSV with columns case,group, or a regex with one group",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic algorithms and in-process data loading (bit-exact resume; slower)",
    )
    p.set_defaults(handler=run_train)


def run_train(args, ws: Workspace) -> int:
    from autoseg.cli.common import parse_folds, parse_set
    from autoseg.training.run import train_folds

    overrides = parse_set(args.settings)
    if args.pretrained:
        overrides["pretrained"] = str(Path(args.pretrained).resolve())
    results = train_folds(
        ws,
        args.dataset,
        args.configurations,
        parse_folds(args.folds, n_folds=1000),
        plans_name=args.plans,
        trainer=args.trainer,
        overrides=overrides,
        resume=args.resume,
        device=args.device,
        num_workers=args.num_workers,
        group_by=args.group_by,
        deterministic=args.deterministic,
    )
    done = [r for r in results if r.final_checkpoint is not None]  # under torchrun: rank 0 only
    for r in done:
        print(f"fold {r.fold}: {r.epochs_done} epochs, best EMA pseudo-Dice {r.best_ema_dice:.4f} -> {r.run_dir}")
    if done:  # when every fold of a configuration is finished, choose the model (as `autoseg select` does)
        from autoseg.evaluation.select import maybe_select, selection_report

        sel = maybe_select(ws, args.dataset, args.plans, args.trainer)
        if sel is not None:
            print(selection_report(sel))
    return 0
