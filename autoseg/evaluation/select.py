"""Model selection on cross-validation: best configuration or pair ensemble, then its postprocessing.

`select_model` merges the validation predictions of every configuration whose folds are all finished into
``results/<ds>/<plans>/<config>/<trainer>/crossval/``, builds the averaged-probability ensemble of every pair of such
configurations in ``results/<ds>/ensembles/<plans>__<trainer>__<a>+<b>/`` (needs the folds' ``validation/*.npz``),
scores each candidate against ``preprocessed/<ds>/gt_segmentations`` (mean foreground Dice, metrics module) and keeps
the best (ties: the earlier candidate; single configurations come before ensembles). Postprocessing is then decided
on the winner (autoseg.evaluation.postprocess) and everything is written to ``results/<ds>/selection.json``.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoseg import __version__
from autoseg.data.image_io import file_ending, read_file, read_label, supported_endings, write_label
from autoseg.data.labels import LabelScheme, class_key
from autoseg.data.probabilities import average_probability_files, probabilities_to_labels
from autoseg.errors import AutosegError, ConfigError
from autoseg.evaluation.metrics import evaluate_folder, save_evaluation
from autoseg.evaluation.postprocess import Postprocessing, determine_postprocessing
from autoseg.fingerprint.describe import describe_dataset
from autoseg.log import logger, progress
from autoseg.planning.plans import Plans
from autoseg.serialization import atomic_write_bytes, from_json, load_json, save_json
from autoseg.workspace import Workspace

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Candidate:
    configurations: tuple[str, ...]  # one configuration, or two for an ensemble
    mean_dice: float | None  # mean foreground Dice of the merged cross-validation predictions (None: NaN)
    dice: dict[str, float | None]  # per foreground label
    folder: str  # the merged cross-validation predictions

    @property
    def name(self) -> str:
        return "+".join(self.configurations)


@dataclass(frozen=True)
class Selection:
    schema_version: int
    dataset: str
    plans_name: str
    trainer: str
    configurations: tuple[str, ...]  # the winner: one configuration or an ensemble of two
    folds: tuple[int, ...]
    mean_dice: float | None  # winner's cross-validation mean foreground Dice before postprocessing
    postprocessing: Postprocessing
    candidates: tuple[Candidate, ...]
    autoseg_version: str = ""

    @property
    def is_ensemble(self) -> bool:
        return len(self.configurations) > 1

    def save(self, path: str | Path) -> Path:
        return save_json(path, self)

    @classmethod
    def load(cls, path: str | Path) -> Selection:
        try:
            sel = from_json(cls, load_json(path))
        except ValueError as exc:
            raise ConfigError(f"{path}: invalid selection file: {exc}") from exc
        if sel.schema_version != SCHEMA_VERSION:
            raise ConfigError(f"{path}: selection schema_version {sel.schema_version}, expected {SCHEMA_VERSION}")
        return sel


# ---- what is trained ------------------------------------------------------------------------------------------
def num_folds(ws: Workspace, name: str) -> int:
    """Folds of the dataset's splits.json (5 when the file does not exist yet)."""
    path = ws.splits_file(name)
    if not path.is_file():
        return 5
    data = load_json(path)
    return len(data) if isinstance(data, list) and data else 5


def trained_configurations(ws: Workspace, name: str, plans: Plans, trainer: str) -> list[str]:
    """Configurations of `plans` (in plans order) whose folds 0..n-1 are all finished."""
    n = num_folds(ws, name)
    return [
        c.name
        for c in plans.configurations
        if all(ws.run(name, plans.name, c.name, trainer, k).finished for k in range(n))
    ]


# ---- merged cross-validation predictions ----------------------------------------------------------------------
def merge_crossval(
    ws: Workspace, name: str, plans_name: str, config: str, trainer: str, n: int, ending: str
) -> dict[str, Path]:
    """Copy the folds' validation segmentations into ``crossval/``; returns case -> its fold's validation folder."""
    out, where = ws.run(name, plans_name, config, trainer, 0).crossval, {}
    for k in range(n):
        val = ws.run(name, plans_name, config, trainer, k).validation
        for seg in sorted(p for p in val.glob(f"*{ending}") if not p.name.startswith(".")):
            cid = seg.name[: -len(ending)]
            if cid in where:
                raise ConfigError(f"{seg}: case {cid!r} is validated in two folds; splits.json must be disjoint")
            where[cid] = val
            atomic_write_bytes(out / seg.name, seg.read_bytes())
    if not where:
        raise ConfigError(f"{out.parent}: the folds' validation folders hold no predictions ending in {ending!r}")
    return where


def _candidate(ws: Workspace, name, configs, folder: Path, scheme: LabelScheme, ending, case_ids, jobs) -> Candidate:
    """Score a candidate's CV predictions per class (label, or region "1,2"), the ignore label left out."""
    labels, gt = scheme.classes, ws.gt_folder(name)
    df, summary = evaluate_folder(gt, folder, labels, ending, jobs, case_ids, ignore_label=scheme.ignore_label)
    save_evaluation(df, summary, folder)
    per = {class_key(v): _num(summary["mean"][class_key(v)]["dice"]) for v in labels}
    return Candidate(tuple(configs), _num(summary["mean_dice"]), per, str(folder))


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _ensemble_pair(ws: Workspace, name, plans_name, trainer, pair, where, ending, scheme=None) -> Path | None:
    """Write the averaged-probability CV predictions of a pair; None when a member lacks probability files."""
    a, b = pair
    for cfg in pair:
        missing = [c for c, d in where[cfg].items() if not (d / f"{c}.npz").is_file()]
        if missing:
            logger.warning(f"ensemble {a}+{b} skipped: {cfg} has no probabilities for {missing[0]} (.npz)")
            return None
    out = ws.results_dataset(name) / "ensembles" / f"{plans_name}__{trainer}__{a}+{b}"
    for cid in progress(sorted(where[a]), desc=f"ensemble {a}+{b}", unit="case"):
        probs = average_probability_files([where[a][cid] / f"{cid}.npz", where[b][cid] / f"{cid}.npz"])
        _, geometry = read_file(where[a][cid] / f"{cid}{ending}")
        write_label(out / f"{cid}{ending}", probabilities_to_labels(probs, scheme), geometry)
    return out


def _read_pairs(pred_dir: Path, gt_dir: Path, case_ids: Sequence[str], ending: str):

    for cid in case_ids:
        yield read_label(pred_dir / f"{cid}{ending}")[0], read_label(gt_dir / f"{cid}{ending}")[0]


# ---- selection ------------------------------------------------------------------------------------------------
def select_model(
    ws: Workspace, dataset, plans_name: str = "default", trainer: str = "default", jobs: int = 1
) -> Selection:
    """Compare every fully trained configuration and every pair ensemble on cross-validation; write selection.json."""

    name = ws.resolve(dataset)
    plans = Plans.load(ws.plans_file(name, plans_name))
    n = num_folds(ws, name)
    configs = trained_configurations(ws, name, plans, trainer)
    if not configs:
        raise ConfigError(
            f"{ws.results_dataset(name) / plans.name}: no configuration has all {n} folds finished "
            f"(checkpoint_final.pt and validation/summary.json, trainer {trainer!r}); train with -f 0..{n - 1} first"
        )
    described = describe_dataset(ws, name)
    scheme, ending = described.scheme, described.file_ending
    where = {c: merge_crossval(ws, name, plans.name, c, trainer, n, ending) for c in configs}
    candidates = []
    for c in configs:
        folder = ws.run(name, plans.name, c, trainer, 0).crossval
        candidates.append(_candidate(ws, name, (c,), folder, scheme, ending, sorted(where[c]), jobs))
    for pair in itertools.combinations(configs, 2):
        if set(where[pair[0]]) != set(where[pair[1]]):
            logger.warning(f"ensemble {'+'.join(pair)} skipped: the configurations validated different cases")
            continue
        folder = _ensemble_pair(ws, name, plans.name, trainer, pair, where, ending, scheme)
        if folder is not None:
            candidates.append(_candidate(ws, name, pair, folder, scheme, ending, sorted(where[pair[0]]), jobs))
    best = candidates[0]
    for cand in candidates[1:]:
        if (cand.mean_dice if cand.mean_dice is not None else -1) > (best.mean_dice or -1):
            best = cand
    cases = sorted(where[best.configurations[0]])
    pairs = _read_pairs(Path(best.folder), ws.gt_folder(name), cases, ending)
    post = determine_postprocessing(pairs, scheme.classes, scheme.ignore_label)
    sel = Selection(
        SCHEMA_VERSION, name, plans.name, trainer, best.configurations, tuple(range(n)), best.mean_dice, post,
        tuple(candidates), __version__,
    )  # fmt: skip
    sel.save(ws.selection_file(name))
    logger.info(f"selection: {best.name} (mean Dice {best.mean_dice}); postprocessing: {post.describe()}")
    return sel


def maybe_select(ws: Workspace, dataset, plans_name: str = "default", trainer: str = "default") -> Selection | None:
    """Run `select_model` when at least one configuration has all folds finished, else do nothing (None).

    Meant for the end of `autoseg train`: a failure is logged as a warning and never raised.
    """
    try:
        name = ws.resolve(dataset)
        plans = Plans.load(ws.plans_file(name, plans_name))
        if not trained_configurations(ws, name, plans, trainer):
            return None
        return select_model(ws, name, plans_name, trainer)
    except AutosegError as exc:
        logger.warning(f"automatic model selection skipped: {exc}")
        return None


# ---- reporting ------------------------------------------------------------------------------------------------
def predict_command(sel: Selection) -> str:

    cmd = f"autoseg predict -i INPUT_FOLDER -o OUTPUT_FOLDER -d {Workspace.dataset_number(sel.dataset)}"
    cmd += " --ensemble" if sel.is_ensemble else f" -c {sel.configurations[0]}"
    if sel.plans_name != "default":
        cmd += f" --plans {sel.plans_name}"
    if sel.trainer != "default":
        cmd += f" --trainer {sel.trainer}"
    return cmd


def selection_report(sel: Selection) -> str:
    """Plain-text table of the candidates, the winner, its postprocessing and the predict command."""

    def fmt(x: float | None) -> str:
        return "nan" if x is None else f"{x:.4f}"

    width = max(len(c.name) for c in sel.candidates) + 2
    lines = [f"{sel.dataset}: cross-validation mean foreground Dice ({len(sel.folds)} folds)"]
    for c in sel.candidates:
        mark = "  <- best" if c.configurations == sel.configurations else ""
        per = ", ".join(f"{k}: {fmt(v)}" for k, v in c.dice.items())
        lines.append(f"  {c.name.ljust(width)}{fmt(c.mean_dice)}  ({per}){mark}")
    pp = sel.postprocessing
    after = fmt((pp.dice_after or {}).get("mean"))
    lines.append(f"postprocessing: {pp.describe()} (mean Dice {fmt((pp.dice_before or {}).get('mean'))} -> {after})")
    lines.append(f"predict with:\n  {predict_command(sel)}")
    return "\n".join(lines)


# ---- evaluate any folder --------------------------------------------------------------------------------------
def _common_ending(folder: Path) -> str:

    endings = Counter(file_ending(p) for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    known = supported_endings()
    found = [e for e, _ in endings.most_common() if e in known]
    if not found:
        raise ConfigError(f"{folder}: no segmentation files ({', '.join(known)}) found")
    return found[0]


def _reference_labels(ref_dir: Path, case_ids: Sequence[str], ending: str) -> list[int]:

    values: set[int] = set()
    for cid in case_ids:
        values.update(int(v) for v in np.unique(read_label(ref_dir / f"{cid}{ending}")[0]))
    return sorted(v for v in values if v != 0)


def evaluate_predictions(
    ws: Workspace,
    ref_dir,
    pred_dir,
    dataset=None,
    labels: Sequence[int] | None = None,
    out_dir=None,
    tolerance_mm: float = 1.0,
    jobs: int = 1,
) -> tuple[dict, Path, Path]:
    """Score the segmentations of `pred_dir` against `ref_dir` -> (summary, CSV path, summary JSON path).

    Labels: `labels` if given, else the dataset's classes (`dataset`: its foreground labels, or its regions, with
    the voxels of its ignore label left out), else every non-zero value found in the references. Results go to
    `out_dir` (default: `pred_dir`) as metrics_per_case.csv and summary.json.
    """
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    for folder, what in ((ref_dir, "reference"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise ConfigError(f"{folder}: {what} folder not found")
    ending = _common_ending(pred_dir)
    case_ids = sorted(p.name[: -len(ending)] for p in pred_dir.glob(f"*{ending}") if not p.name.startswith("."))
    ignore = None
    if labels is None and dataset is not None:
        scheme = describe_dataset(ws, ws.resolve(dataset)).scheme
        labels, ignore = scheme.classes, scheme.ignore_label
    if labels is None:
        labels = _reference_labels(ref_dir, case_ids, ending)
        logger.info(f"labels found in the references: {labels}")
    if not labels:
        raise ConfigError(f"{ref_dir}: no foreground labels to evaluate; pass --labels 1 2 ...")
    df, summary = evaluate_folder(ref_dir, pred_dir, list(labels), ending, jobs, case_ids, tolerance_mm, ignore)
    csv_path, json_path = save_evaluation(df, summary, out_dir if out_dir is not None else pred_dir)
    return summary, csv_path, json_path
