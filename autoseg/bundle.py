"""Model bundles: a trained model as one self-contained zip file (export), and its safe installation (install).

A bundle is a zip file (``autoseg export``) holding::

    bundle.json                      format version, dataset, plans name, trainer, configuration -> folds
    plans.json  dataset.json         validated on load (Plans.load, dataset.json rules)
    selection.json                   the cross-validation selection, if one was made (postprocessing included)
    postprocessing.json              the selected postprocessing steps (for reading; selection.json is used)
    fingerprint.json                 the dataset fingerprint, if present
    models/<config>/fold_<k>/weights.pt           the network's state dict (tensors only)
    models/<config>/fold_<k>/train_config.json    how the fold was trained
    models/<config>/fold_<k>/network.onnx         with --onnx: the network as ONNX (opset 17, full-resolution output)
    onnx.json                                     with --onnx: the contract of the ONNX files (docs/inference.md)

`autoseg install` extracts it into a temporary folder beside the target, validates every JSON file and loads every
weights file with ``torch.load(weights_only=True)`` (no Python object is ever unpickled), then renames the folder
into place: by default ``results/<dataset>/bundle``, where `autoseg predict -d N` finds it; any folder works with
``predict -m`` (reading an installed bundle is `autoseg.inference.source.load_bundle`). A zip entry with an absolute
path, a ``..`` component or a link is refused.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import torch

from autoseg import __version__
from autoseg.errors import ConfigError
from autoseg.inference.backends.contract import CONTRACT_FILE, onnx_contract, onnx_file
from autoseg.inference.backends.onnx_file import export_onnx
from autoseg.inference.source import (
    BUNDLE_FILE,
    FORMAT_VERSION,
    INSTALL_DIR,
    BundleInfo,
    ModelSource,
    load_bundle,
    source_from_workspace,
)
from autoseg.log import logger
from autoseg.networks.build import build_network
from autoseg.networks.weights import load_weights
from autoseg.serialization import atomic_target, dumps, from_json
from autoseg.workspace import RunFolder, Workspace


# ---- export ----------------------------------------------------------------------------------------------------
def export_bundle(
    ws: Workspace,
    dataset,
    out_zip,
    configurations=None,
    plans_name: str = "default",
    trainer: str = "default",
    folds=None,
    onnx: bool = False,
) -> Path:
    """Write the finished folds (and selection, plans, dataset description) of a dataset as a zip file; `onnx`:
    also each fold's network as an ONNX file and the contract that says how to use them (onnx.json)."""
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
    with atomic_target(out_zip) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
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
                cfg = RunFolder(src.weights[c][f].parent).train_config
                if cfg.is_file():
                    zf.write(cfg, f"models/{c}/fold_{f}/train_config.json")
        if onnx:
            _write_onnx(zf, src, models)
    logger.info(f"exported {name} ({', '.join(f'{c}: folds {v}' for c, v in models.items())}) -> {out_zip}")
    return out_zip


def _in_channels(src: ModelSource, configuration: str) -> int:
    """Network input channels: the image's, plus one per foreground label for a cascade stage."""
    cfg = src.plans.configuration(configuration)
    extra = len(src.scheme.foreground_labels) if cfg.previous_stage is not None else 0
    return len(cfg.normalization) + extra


def _write_onnx(zf: zipfile.ZipFile, src: ModelSource, models: dict[str, list[int | str]]) -> None:
    """Every fold's network as ONNX, and onnx.json (the contract)."""
    channels = {c: _in_channels(src, c) for c in models}
    with tempfile.TemporaryDirectory(prefix="autoseg-onnx-") as tmp:
        for c, fs in models.items():
            cfg = src.plans.configuration(c)
            for f in fs:
                net = build_network(cfg.network, channels[c], src.num_classes, False)
                net.load_state_dict(load_weights(src.weights[c][f]))
                zf.write(export_onnx(net, channels[c], cfg.patch_size, Path(tmp) / f"{c}_{f}.onnx"), onnx_file(c, f))
    intensity = src.plans.intensity if src.plans.intensity is not None else getattr(src.fingerprint, "intensity", None)
    contract = onnx_contract(src.plans, models, src.labels, intensity, channels, src.num_classes, src.scheme.activation)
    zf.writestr(CONTRACT_FILE, dumps(contract))


def _dataset_json(ws: Workspace, name: str, src: ModelSource) -> str:
    raw = ws.raw_dataset(name) / "dataset.json"
    if raw.is_file():
        return raw.read_text(encoding="utf-8")
    return dumps(
        {
            "channel_names": {str(i): c for i, c in enumerate(src.channel_names)},
            "labels": src.labels,
            "numTraining": 1,
            "file_ending": src.file_ending,
            **({"regions_class_order": list(src.regions_class_order)} if src.regions_class_order else {}),
        }
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


def install_bundle(ws: Workspace, zip_path, to=None, force: bool = False) -> Path:
    """Extract and validate a bundle; returns the installed folder (default results/<dataset>/bundle)."""
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise ConfigError(f"{zip_path}: bundle file not found")
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise ConfigError(f"{zip_path}: not a zip file") from exc
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
    try:
        info = from_json(BundleInfo, json.loads(data.decode("utf-8")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: invalid {BUNDLE_FILE}: {exc}") from exc
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
