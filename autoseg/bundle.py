"""Where trained models live: run folders of a workspace, or a self-contained bundle (export / install / load).

A bundle is a zip file (``autoseg export``) holding::

    bundle.json                      format version, dataset, plans name, trainer, configuration -> folds
    plans.json  dataset.json         validated on load (Plans.load, dataset.json rules)
    selection.json                   the cross-validation selection, if one was made (postprocessing included)
    postprocessing.json              the selected postprocessing steps (for reading; selection.json is used)
    fingerprint.json                 the dataset fingerprint, if present
    models/<config>/fold_<k>/weights.pt           the network's state dict (tensors only)
    models/<config>/fold_<k>/train_config.json    how the fold was trained

`autoseg install` extracts it into a temporary folder beside the target, validates every JSON file and loads every
weights file with ``torch.load(weights_only=True)`` (no Python object is ever unpickled), then renames the folder
into place: by default ``results/<dataset>/bundle``, where `autoseg predict -d N` finds it; any folder works with
``predict -m``. A zip entry with an absolute path, a ``..`` component or a link is refused.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from autoseg import __version__
from autoseg.errors import ConfigError
from autoseg.inference.predictor import ModelSource
from autoseg.log import logger
from autoseg.serialization import dumps, from_json, load_json

FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
INSTALL_DIR = "bundle"


@dataclass(frozen=True)
class BundleInfo:
    format_version: int
    dataset: str
    plans_name: str
    trainer: str
    models: dict[str, list[int | str]]  # configuration -> folds
    autoseg_version: str = ""


# ---- workspace sources -----------------------------------------------------------------------------------------
def _dataset_description(ws, name: str) -> tuple[dict[str, int], tuple[str, ...], str]:
    """(labels, channel names, file ending) from the fingerprint, else from the raw dataset.json."""
    from autoseg.data.dataset import load_dataset
    from autoseg.fingerprint.fingerprint import DatasetFingerprint

    if ws.fingerprint_file(name).is_file():
        fp = DatasetFingerprint.load(ws.fingerprint_file(name))
        return dict(fp.labels), tuple(fp.channel_names), fp.file_ending
    spec = load_dataset(ws.raw_dataset(name))
    return dict(spec.labels), spec.channel_names, spec.file_ending


def _fold_key(folder: Path) -> int | str:
    key = folder.name.split("_", 1)[1]
    return int(key) if key.isdigit() else key


def source_from_workspace(ws, name: str, plans_name: str = "default", trainer: str = "default") -> ModelSource:
    """The finished folds (checkpoint_final.pt) of every configuration of `plans_name` trained with `trainer`."""
    from autoseg.evaluation.select import Selection
    from autoseg.planning.plans import Plans

    plans_path = ws.plans_file(name, plans_name)
    if not plans_path.is_file():  # the copy in a run folder is enough to predict
        copies = sorted((ws.results_dataset(name) / plans_name).glob(f"*/{trainer}/fold_*/plans.json"))
        plans_path = copies[0] if copies else plans_path
    plans = Plans.load(plans_path)
    weights = {}
    for conf in plans.configurations:
        root = ws.run_dir(name, plans.name, conf.name, trainer, 0).parent
        folds = sorted(root.glob("fold_*/checkpoint_final.pt"), key=lambda p: str(_fold_key(p.parent)))
        if folds:
            weights[conf.name] = {_fold_key(p.parent): p for p in folds}
    selection = None
    if ws.selection_file(name).is_file():
        sel = Selection.load(ws.selection_file(name))
        selection = sel if (sel.plans_name, sel.trainer) == (plans.name, trainer) else None
    labels, channels, ending = _dataset_description(ws, name)
    fp = _fingerprint(ws.fingerprint_file(name))
    return ModelSource(name, plans, labels, channels, ending, weights, selection, ws.results_dataset(name), fp)


def _fingerprint(path: Path):
    from autoseg.fingerprint.fingerprint import DatasetFingerprint

    return DatasetFingerprint.load(path) if path.is_file() else None


def trained_datasets(ws) -> list[str]:
    """Datasets in the results folder with at least one finished fold or an installed bundle."""
    if not ws.results.is_dir():
        return []
    out = []
    for d in sorted(ws.results.iterdir()):
        if re.match(r"^Dataset\d{3}_.+$", d.name) and d.is_dir():
            if (d / INSTALL_DIR / BUNDLE_FILE).is_file() or next(d.glob("*/*/*/fold_*/checkpoint_final.pt"), None):
                out.append(d.name)
    return out


def resolve_source(ws, dataset=None, model_dir=None, plans_name: str = "default", trainer: str = "default"):
    """The model to predict with: a bundle folder (`model_dir`), else the dataset's run folders or installed bundle.

    Without `dataset` the results folder must hold exactly one trained dataset.
    """
    if model_dir is not None:
        return load_bundle(model_dir)
    if dataset is None:
        found = trained_datasets(ws)
        if len(found) != 1:
            listing = ", ".join(found) if found else "none"
            raise ConfigError(
                f"{ws.results}: {'several' if found else 'no'} trained datasets ({listing}); choose one with -d N"
                + ("" if found else " or give a model folder with -m")
            )
        dataset = found[0]
    name = ws.resolve(dataset)
    source = source_from_workspace(ws, name, plans_name, trainer) if _has_plans(ws, name, plans_name) else None
    if source is not None and source.trained():
        return source
    if (ws.results_dataset(name) / INSTALL_DIR / BUNDLE_FILE).is_file():
        return load_bundle(ws.results_dataset(name) / INSTALL_DIR)
    raise ConfigError(
        f"{ws.results_dataset(name)}: no finished fold (checkpoint_final.pt) for plans {plans_name!r} and trainer "
        f"{trainer!r}, and no installed bundle; train with `autoseg train -d {dataset}` or `autoseg install model.zip`"
    )


def _has_plans(ws, name: str, plans_name: str) -> bool:
    return (
        ws.plans_file(name, plans_name).is_file()
        or next((ws.results_dataset(name) / plans_name).glob("*/*/fold_*/plans.json"), None) is not None
    )


# ---- export ----------------------------------------------------------------------------------------------------
def export_bundle(
    ws, dataset, out_zip, configurations=None, plans_name: str = "default", trainer: str = "default", folds=None
) -> Path:
    """Write the finished folds (and selection, plans, dataset description) of a dataset as a zip file."""
    import torch

    from autoseg.training.checkpoint import load_weights

    name = ws.resolve(dataset)
    src = source_from_workspace(ws, name, plans_name, trainer)
    sel = src.selection
    configs = list(configurations or (sel.configurations if sel else src.trained()))
    for c in list(configs):  # a cascade stage predicts with its previous stage first: that goes in too
        prev = src.plans.configuration(c).previous_stage if c in src.plans.names() else None
        while prev is not None and prev not in configs:
            configs.insert(configs.index(c), prev)
            c, prev = prev, src.plans.configuration(prev).previous_stage
    models: dict[str, list[int | str]] = {}
    for c in configs:
        avail = src.weights.get(c, {})
        chosen = [f for f in avail if folds is None or f in folds]
        if not chosen:
            raise ConfigError(f"{ws.results_dataset(name)}: configuration {c!r} has no finished fold to export")
        models[c] = chosen
    info = BundleInfo(FORMAT_VERSION, name, src.plans.name, trainer, models, __version__)
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_zip.name}.", suffix=".tmp", dir=out_zip.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(BUNDLE_FILE, dumps(info))
            zf.writestr("plans.json", dumps(src.plans))
            zf.writestr("dataset.json", _dataset_json(ws, name, src))
            if ws.fingerprint_file(name).is_file():
                zf.write(ws.fingerprint_file(name), "fingerprint.json")
            if sel is not None:
                zf.writestr("selection.json", dumps(sel))
                zf.writestr("postprocessing.json", dumps(sel.postprocessing))
            for c, fs in models.items():
                for f in fs:
                    buf = io.BytesIO()
                    torch.save(load_weights(src.weights[c][f]), buf)
                    zf.writestr(f"models/{c}/fold_{f}/weights.pt", buf.getvalue())
                    cfg = src.weights[c][f].parent / "train_config.json"
                    if cfg.is_file():
                        zf.write(cfg, f"models/{c}/fold_{f}/train_config.json")
        os.replace(tmp, out_zip)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    logger.info(f"exported {name} ({', '.join(f'{c}: folds {v}' for c, v in models.items())}) -> {out_zip}")
    return out_zip


def _dataset_json(ws, name: str, src: ModelSource) -> str:
    raw = ws.raw_dataset(name) / "dataset.json"
    if raw.is_file():
        return raw.read_text(encoding="utf-8")
    return dumps(
        {
            "channel_names": {str(i): c for i, c in enumerate(src.channel_names)},
            "labels": src.labels,
            "numTraining": 1,
            "file_ending": src.file_ending,
        }
    )


# ---- load / install --------------------------------------------------------------------------------------------
def load_bundle(folder) -> ModelSource:
    """Validate an installed bundle folder and describe it as a ModelSource (weights are loaded later)."""
    from autoseg.data.dataset import load_dataset
    from autoseg.evaluation.select import Selection
    from autoseg.planning.plans import Plans

    folder = Path(folder)
    path = folder / BUNDLE_FILE
    if not path.is_file():
        raise ConfigError(f"{folder}: not a model bundle ({BUNDLE_FILE} missing); install one with `autoseg install`")
    try:
        info = from_json(BundleInfo, load_json(path))
    except ValueError as exc:
        raise ConfigError(f"{path}: invalid bundle description: {exc}") from None
    if info.format_version != FORMAT_VERSION:
        raise ConfigError(f"{path}: bundle format {info.format_version}, this autoseg reads {FORMAT_VERSION}")
    plans = Plans.load(folder / "plans.json")
    spec = load_dataset(folder)
    weights: dict[str, dict[int | str, Path]] = {}
    for c, folds in info.models.items():
        plans.configuration(c)  # raises if unknown
        for f in folds:
            w = folder / "models" / c / f"fold_{f}" / "weights.pt"
            if not w.is_file():
                raise ConfigError(f"{w}: weights listed in {BUNDLE_FILE} are missing")
            weights.setdefault(c, {})[f] = w
    sel_path = folder / "selection.json"
    selection = Selection.load(sel_path) if sel_path.is_file() else None
    fp = _fingerprint(folder / "fingerprint.json")
    return ModelSource(
        info.dataset, plans, dict(spec.labels), spec.channel_names, spec.file_ending, weights, selection, folder, fp
    )


def _safe_members(zf: zipfile.ZipFile, zip_path: Path) -> list[zipfile.ZipInfo]:
    members = []
    for m in zf.infolist():
        name = m.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        bad = name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts
        if bad:
            raise ConfigError(f"{zip_path}: entry {name!r} would be written outside the target folder; refused")
        if (m.external_attr >> 16) & 0o170000 == 0o120000:
            raise ConfigError(f"{zip_path}: entry {name!r} is a symbolic link; refused")
        if not m.is_dir():
            members.append(m)
    return members


def install_bundle(ws, zip_path, to=None, force: bool = False) -> Path:
    """Extract and validate a bundle; returns the installed folder (default results/<dataset>/bundle)."""
    from autoseg.training.checkpoint import load_weights

    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise ConfigError(f"{zip_path}: bundle file not found")
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise ConfigError(f"{zip_path}: not a zip file") from None
    with zf:
        members = _safe_members(zf, zip_path)
        if BUNDLE_FILE not in {m.filename for m in members}:
            raise ConfigError(f"{zip_path}: not an autoseg bundle ({BUNDLE_FILE} missing)")
        target = Path(to) if to else ws.results / _bundle_dataset(zf.read(BUNDLE_FILE), zip_path) / INSTALL_DIR
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.install-", dir=target.parent))
        try:
            root = tmp.resolve()
            for m in members:
                dest = (tmp / m.filename).resolve()
                if root not in dest.parents:
                    raise ConfigError(f"{zip_path}: entry {m.filename!r} escapes the target folder; refused")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            source = load_bundle(tmp)
            for folds in source.weights.values():
                for w in folds.values():
                    load_weights(w)
            _move_into_place(tmp, target, force)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    logger.info(f"installed {source.dataset} ({', '.join(source.trained())}) -> {target}")
    return target


def _bundle_dataset(data: bytes, where: Path) -> str:
    """The dataset name from a bundle.json's bytes (validated)."""
    import json

    try:
        info = from_json(BundleInfo, json.loads(data.decode("utf-8")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: invalid {BUNDLE_FILE}: {exc}") from None
    if not re.match(r"^Dataset\d{3}_[\w.-]+$", info.dataset):
        raise ConfigError(f"{where}: {BUNDLE_FILE} names an invalid dataset {info.dataset!r}")
    return info.dataset


def _move_into_place(tmp: Path, target: Path, force: bool) -> None:
    if target.exists():
        if not force:
            raise ConfigError(f"{target}: already exists; remove it, use --force, or install elsewhere with --to")
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old)
    else:
        os.rename(tmp, target)
