"""nnU-Net v2 trained-model folders (and `nnUNetv2_export_model_to_zip` zips) as autoseg model sources.

A trained-model folder ``<Trainer>__<Plans>__<configuration>/`` holds plans.json, dataset.json,
dataset_fingerprint.json and ``fold_<k>/checkpoint_final.pth``; `load_nnunet_model` describes it as a `ModelSource`
(weights_format "nnunet") without copying or converting anything on disk:

- plans and labels come from plans.json / dataset.json (`autoseg.planning.nnunet_plans`, which refuses what autoseg
  does not reproduce);
- each fold's checkpoint is opened once here, weights-only and memory-mapped, for its
  ``inference_allowed_mirroring_axes`` (the TTA axes); the Predictor loads the weights later through the same safe
  loader (`autoseg.networks.nnunet_checkpoint`), renaming dynamic_network_architectures' keys to autoseg's;
- postprocessing comes from ``crossval_results_folds_<folds>/postprocessing.json`` when it exists for the folds
  used; ``postprocessing.pkl`` is never unpickled (it could run code): without the JSON there is no postprocessing,
  and a note says so.

The folder is read in place rather than imported into an autoseg bundle: nothing to keep in sync, no second copy of
gigabytes of weights, and the mapping (plans fields, key names) costs milliseconds, so a user passes the folder (or
the zip, extracted to a temporary folder for the run) and never needs to know. `run_predict_nnunet` then predicts
through the same road as autoseg's own models (Predictor, predict_folder, export_case); several folders form a
configuration ensemble (probabilities averaged in the input grid, as nnU-Net's ensembling).
"""

from __future__ import annotations

import stat
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from autoseg.errors import ConfigError, PlansError
from autoseg.inference.source import ModelSource, fold_key
from autoseg.networks.nnunet_checkpoint import check_mirror_axes, read_checkpoint
from autoseg.planning.nnunet_plans import channels_from_nnunet, labels_from_nnunet, plans_from_nnunet
from autoseg.serialization import load_json

DEFAULT_CHECKPOINT = "checkpoint_final.pth"
LARGEST_COMPONENT = "remove_all_but_largest_component_from_segmentation"


@dataclass(frozen=True)
class NnunetModel:
    """One nnU-Net trained-model folder as autoseg sees it."""

    source: ModelSource
    configuration: str
    trainer: str
    postprocessing: tuple[tuple[int, ...], ...]  # autoseg postprocessing steps (from postprocessing.json)
    notes: tuple[str, ...] = ()  # what the user should know (e.g. a postprocessing.pkl that was not used)


def _json(path: Path) -> dict:
    try:
        data = load_json(path)
    except ValueError as exc:
        raise ConfigError(f"{exc} (an nnU-Net model folder needs plans.json and dataset.json)") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def _configuration_name(folder: Path, plans: dict) -> str:
    parts = folder.name.split("__")
    if len(parts) == 3 and parts[2] in plans.get("configurations", {}):
        return parts[2]
    configs = list(plans.get("configurations", {}))
    if len(configs) == 1:
        return configs[0]
    raise ConfigError(
        f"{folder}: cannot tell the configuration: the folder is not named <Trainer>__<Plans>__<configuration> "
        f"and plans.json has several ({', '.join(configs)})"
    )


def _folds(folder: Path, folds: Sequence[int | str] | None, checkpoint: str) -> dict[int | str, Path]:
    found = {fold_key(d): d / checkpoint for d in sorted(folder.glob("fold_*")) if (d / checkpoint).is_file()}
    if folds is None:
        if not found:
            raise ConfigError(f"{folder}: no fold_<k>/{checkpoint}; choose another file with --checkpoint")
        return dict(sorted(found.items(), key=lambda kv: str(kv[0])))
    folds = [int(f) if isinstance(f, str) and f.isdigit() else f for f in folds]  # "0" and 0 name the same fold
    missing = [f for f in folds if f not in found]
    if missing:
        raise ConfigError(
            f"{folder}: fold {missing[0]} has no {checkpoint} (folds with one: {', '.join(map(str, found)) or 'none'})"
        )
    return {f: found[f] for f in folds}


def postprocessing_steps(path: Path, labels: dict[str, int]) -> tuple[tuple[int, ...], ...]:
    """nnU-Net's postprocessing.json (``postprocessing_fns`` + ``postprocessing_kwargs``) as autoseg steps: each
    ``remove_all_but_largest_component_from_segmentation`` of a label or label list is one step (a label group whose
    union keeps its largest component). Other functions and regions are refused, naming the file."""
    data = _json(path)
    fns, kwargs = data.get("postprocessing_fns"), data.get("postprocessing_kwargs")
    if not isinstance(fns, list) or not isinstance(kwargs, list) or len(fns) != len(kwargs):
        raise ConfigError(f"{path}: needs the lists postprocessing_fns and postprocessing_kwargs of equal length")
    known, steps = set(labels.values()), []
    for fn, kw in zip(fns, kwargs):
        if fn != LARGEST_COMPONENT:
            raise ConfigError(f"{path}: postprocessing function {fn!r} is not supported (autoseg applies "
                              f"{LARGEST_COMPONENT}); predict with --no-postprocessing")  # fmt: skip
        group = (kw or {}).get("labels_or_regions")
        group = [group] if isinstance(group, int) else group
        if not isinstance(group, list) or not all(isinstance(v, int) and v in known and v > 0 for v in group):
            raise ConfigError(f"{path}: labels_or_regions {group!r} must be foreground labels of dataset.json "
                              "(regions are not supported)")  # fmt: skip
        steps.append(tuple(group))
    return tuple(steps)


def _postprocessing(folder: Path, folds, labels) -> tuple[tuple[tuple[int, ...], ...], tuple[str, ...]]:
    cv = folder / f"crossval_results_folds_{'_'.join(map(str, folds))}"
    if (cv / "postprocessing.json").is_file():
        return postprocessing_steps(cv / "postprocessing.json", labels), ()
    pickles = sorted(p.parent.name for p in folder.glob("crossval_results_folds_*/postprocessing.pkl"))
    others = sorted(p.parent.name for p in folder.glob("crossval_results_folds_*/postprocessing.json"))
    if (cv / "postprocessing.pkl").is_file() or pickles:
        return (), (f"{folder}: postprocessing.pkl ({', '.join(pickles)}) is never unpickled (a pickle can run "
                    "code) and there is no postprocessing.json beside it: no postprocessing applied",)  # fmt: skip
    if others:
        return (), (f"{folder}: postprocessing.json exists for other folds ({', '.join(others)}), not for folds "
                    f"{', '.join(map(str, folds))}: no postprocessing applied",)  # fmt: skip
    return (), ()


def load_nnunet_model(
    folder: str | Path, folds: Sequence[int | str] | None = None, checkpoint: str = DEFAULT_CHECKPOINT
) -> NnunetModel:
    """Describe an nnU-Net trained-model folder as a ModelSource; every fold's checkpoint is checked (weights-only,
    memory-mapped) and must agree on the mirror axes."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not an nnU-Net model folder (not a directory)")
    plans_raw, dataset = _json(folder / "plans.json"), _json(folder / "dataset.json")
    fingerprint = (
        _json(folder / "dataset_fingerprint.json") if (folder / "dataset_fingerprint.json").is_file() else None
    )
    name = _configuration_name(folder, plans_raw)
    try:
        plans = plans_from_nnunet(plans_raw, name, folder / "plans.json", fingerprint)
        labels = labels_from_nnunet(dataset, folder / "dataset.json")
        channels = channels_from_nnunet(dataset, folder / "dataset.json")
    except PlansError as exc:
        raise ConfigError(str(exc)) from exc
    conf = plans.configuration(name)
    if len(channels) != len(conf.normalization):
        raise ConfigError(f"{folder}: dataset.json has {len(channels)} channels, the plans normalise "
                          f"{len(conf.normalization)}")  # fmt: skip
    weights = _folds(folder, folds, checkpoint)
    axes, trainer = set(), ""
    for path in weights.values():
        ckpt = read_checkpoint(path, mmap=True)
        check_mirror_axes(ckpt.mirror_axes, conf.ndim, path)
        if ckpt.configuration not in (None, name):
            raise ConfigError(f"{path}: checkpoint of configuration {ckpt.configuration!r}, the folder is {name!r}")
        axes.add(ckpt.mirror_axes)
        trainer = ckpt.trainer_name
    if len(axes) > 1:
        raise ConfigError(f"{folder}: the folds' checkpoints allow different mirror axes ({sorted(map(str, axes))})")
    steps, notes = _postprocessing(folder, list(weights), labels)
    source = ModelSource(
        plans.dataset, plans, labels, channels, str(dataset.get("file_ending", ".nii.gz")), {name: weights}, None,
        folder, None, weights_format="nnunet", mirror_axes={name: axes.pop()},
    )  # fmt: skip
    return NnunetModel(source, name, trainer, steps, notes)


# ---- zips ------------------------------------------------------------------------------------------------------
def unsafe_members(archive: zipfile.ZipFile) -> list[str]:
    """Members that would land outside the extraction folder (absolute paths, '..', drive letters) or are links."""
    bad = []
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        is_link = stat.S_ISLNK(info.external_attr >> 16)
        if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]) or is_link:
            bad.append(info.filename)
    return bad


def extract_model_zip(path: Path, dest: Path) -> list[Path]:
    """Extract an nnUNetv2_export_model_to_zip file into `dest` (every member checked first: zip-slip refused) ->
    the trained-model folders in it (folders holding plans.json and fold_* folders)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if bad := unsafe_members(archive):
                raise ConfigError(f"{path}: refused: {len(bad)} member(s) would be written outside the extraction "
                                  f"folder or are links: {', '.join(bad[:5])}")  # fmt: skip
            archive.extractall(dest)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConfigError(f"{path}: not a readable zip file ({exc})") from exc
    return sorted(p.parent for p in dest.rglob("plans.json") if any(p.parent.glob("fold_*")))


@contextmanager
def model_folders(paths: Sequence[str | Path]) -> Iterator[list[Path]]:
    """The model folders of `paths` (folders as they are; zips extracted to a temporary folder that is removed
    afterwards). A zip must hold exactly one trained-model folder."""
    with ExitStack() as stack:
        out = []
        for p in map(Path, paths):
            if p.is_file() and zipfile.is_zipfile(p):
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="autoseg-nnunet-")))
                found = extract_model_zip(p, tmp)
                if len(found) != 1:
                    names = ", ".join(f.name for f in found) or "none"
                    raise ConfigError(f"{p}: holds {len(found)} trained-model folders ({names}); unzip it and pass "
                                      "the folder(s) to use")  # fmt: skip
                out.append(found[0])
            elif p.is_dir():
                out.append(p)
            else:
                raise ConfigError(f"{p}: neither an nnU-Net model folder nor a zip of one")
        yield out
