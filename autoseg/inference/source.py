"""Where a trained model lives: run folders of a workspace, or an installed bundle (`autoseg.bundle` makes them).

A `ModelSource` says everything prediction needs to know about a trained model: the plans, the dataset's labels,
channels and file ending, the weight file of every (configuration, fold), the cross-validation selection and the
fingerprint. `resolve_source` finds it for `autoseg predict` (-m FOLDER, else the dataset's run folders, else its
installed bundle). An installed bundle folder holds::

    bundle.json                      format version, dataset, plans name, trainer, configuration -> folds
    plans.json  dataset.json         validated on load (Plans.load, dataset.json rules)
    selection.json                   the cross-validation selection, if one was made (postprocessing included)
    fingerprint.json                 the dataset fingerprint, if present
    models/<config>/fold_<k>/weights.pt           the network's state dict (tensors only)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from autoseg.data.dataset import files_per_case, load_dataset
from autoseg.data.labels import LabelScheme, label_scheme
from autoseg.errors import ConfigError
from autoseg.evaluation.select import Selection
from autoseg.fingerprint.describe import describe_dataset
from autoseg.fingerprint.fingerprint import DatasetFingerprint
from autoseg.planning.plans import Plans
from autoseg.serialization import from_json, load_json
from autoseg.workspace import RunFolder, Workspace

FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
INSTALL_DIR = "bundle"


@dataclass(frozen=True)
class ModelSource:
    """A trained model: plans, label/channel description and the weight file of every (configuration, fold)."""

    dataset: str
    plans: Plans
    labels: dict[str, int | list[int]]
    channel_names: tuple[str, ...]
    file_ending: str
    weights: dict[str, dict[int | str, Path]]  # configuration -> fold -> checkpoint / weights file
    selection: Selection | None
    location: Path  # results folder or bundle folder (for messages)
    fingerprint: DatasetFingerprint | None = None  # intensity statistics when the plans hold none
    weights_format: str = "autoseg"  # "nnunet": nnU-Net checkpoints (autoseg.networks.nnunet_checkpoint)
    # configuration -> TTA mirror axes the model allows (None: none); a configuration not listed: every axis
    mirror_axes: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    regions_class_order: tuple[int, ...] | None = None  # a dataset with regions (autoseg.data.labels)

    @property
    def scheme(self) -> LabelScheme:
        """What the outputs mean: softmax classes or sigmoid regions, and the ignore label."""
        return label_scheme(self.labels, self.regions_class_order, f"{self.location}: labels")

    @property
    def num_classes(self) -> int:
        """Network outputs (one per region, else one per label value without the ignore label)."""
        return self.scheme.num_outputs

    @property
    def files_per_case(self) -> int:
        return files_per_case(self.file_ending, self.channel_names)

    def trained(self) -> list[str]:
        """Configurations with at least one fold's weights, in plans order."""
        return [c.name for c in self.plans.configurations if self.weights.get(c.name)]


@dataclass(frozen=True)
class BundleInfo:
    format_version: int
    dataset: str
    plans_name: str
    trainer: str
    models: dict[str, list[int | str]]  # configuration -> folds
    autoseg_version: str = ""


# ---- run folders of a workspace --------------------------------------------------------------------------------
def fold_key(folder: Path) -> int | str:
    """`fold_3` -> 3, `fold_all` -> 'all'."""
    key = folder.name.split("_", 1)[1]
    return int(key) if key.isdigit() else key


def source_from_workspace(
    ws: Workspace, name: str, plans_name: str = "default", trainer: str = "default"
) -> ModelSource:
    """The finished folds (checkpoint_final.pt) of every configuration of `plans_name` trained with `trainer`."""
    plans_path = ws.plans_file(name, plans_name)
    if not plans_path.is_file():  # the copy in a run folder is enough to predict
        copies = sorted((ws.results_dataset(name) / plans_name).glob(f"*/{trainer}/fold_*/plans.json"))
        plans_path = copies[0] if copies else plans_path
    plans = Plans.load(plans_path)
    weights = {}
    for conf in plans.configurations:
        root = ws.run_dir(name, plans.name, conf.name, trainer, 0).parent
        folds = sorted((RunFolder(d).final for d in root.glob("fold_*")), key=lambda p: str(fold_key(p.parent)))
        folds = [p for p in folds if p.is_file()]
        if folds:
            weights[conf.name] = {fold_key(p.parent): p for p in folds}
    selection = None
    if ws.selection_file(name).is_file():
        sel = Selection.load(ws.selection_file(name))
        selection = sel if (sel.plans_name, sel.trainer) == (plans.name, trainer) else None
    described = describe_dataset(ws, name)
    fp = _fingerprint(ws.fingerprint_file(name))
    return ModelSource(
        name, plans, described.labels, described.channel_names, described.file_ending, weights, selection,
        ws.results_dataset(name), fp, regions_class_order=described.regions_class_order,
    )  # fmt: skip


def _fingerprint(path: Path) -> DatasetFingerprint | None:

    return DatasetFingerprint.load(path) if path.is_file() else None


def trained_datasets(ws: Workspace) -> list[str]:
    """Datasets in the results folder with at least one finished fold or an installed bundle."""
    if not ws.results.is_dir():
        return []
    out = []
    for d in sorted(ws.results.iterdir()):
        if re.match(r"^Dataset\d{3}_.+$", d.name) and d.is_dir():
            if (d / INSTALL_DIR / BUNDLE_FILE).is_file() or any(
                RunFolder(f).final.is_file() for f in d.glob("*/*/*/fold_*")
            ):
                out.append(d.name)
    return out


def resolve_source(
    ws: Workspace,
    dataset: str | int | None = None,
    model_dir: str | Path | None = None,
    plans_name: str = "default",
    trainer: str = "default",
) -> ModelSource:
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


def _has_plans(ws: Workspace, name: str, plans_name: str) -> bool:
    return (
        ws.plans_file(name, plans_name).is_file()
        or next((ws.results_dataset(name) / plans_name).glob("*/*/fold_*/plans.json"), None) is not None
    )


# ---- installed bundles -----------------------------------------------------------------------------------------
def load_bundle(folder: str | Path) -> ModelSource:
    """Validate an installed bundle folder and describe it as a ModelSource (weights are loaded later)."""
    folder = Path(folder)
    path = folder / BUNDLE_FILE
    if not path.is_file():
        raise ConfigError(f"{folder}: not a model bundle ({BUNDLE_FILE} missing); install one with `autoseg install`")
    try:
        info = from_json(BundleInfo, load_json(path))
    except ValueError as exc:
        raise ConfigError(f"{path}: invalid bundle description: {exc}") from exc
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
        info.dataset, plans, dict(spec.labels), spec.channel_names, spec.file_ending, weights, selection, folder, fp,
        regions_class_order=spec.regions_class_order,
    )  # fmt: skip
