"""Every on-disk path of autoseg, and dataset id -> folder resolution.

Layout under the workspace root::

    raw/DatasetXXX_Name/{dataset.json, imagesTr/, labelsTr/, imagesTs/}
    preprocessed/DatasetXXX_Name/{fingerprint.json, fingerprint_cases.csv, plans.json, splits.json, <config>/...}
    results/DatasetXXX_Name/<plans>/<config>/<trainer>/fold_<k>/

The root comes from ``--workspace``, else ``AUTOSEG_HOME``, else ``~/autoseg_workspace``; each of the three folders
can be moved with ``AUTOSEG_RAW`` / ``AUTOSEG_PREPROCESSED`` / ``AUTOSEG_RESULTS``. nnU-Net's ``nnUNet_raw`` is read
when ``AUTOSEG_RAW`` is unset (the raw layout is the same, so nnU-Net datasets work untouched); its
``nnUNet_preprocessed`` / ``nnUNet_results`` are deliberately not used: autoseg would write its plans, splits and
``gt_segmentations`` into nnU-Net's own folders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from autoseg.errors import WorkspaceError

DEFAULT_ROOT = Path("~/autoseg_workspace")
_DATASET_RE = re.compile(r"^Dataset(\d{3})_(.+)$")


@dataclass(frozen=True)
class Workspace:
    root: Path
    raw: Path
    preprocessed: Path
    results: Path
    root_source: str = "--workspace"  # where the root came from, for messages

    @classmethod
    def from_env(cls, workspace: str | None, environ: Mapping[str, str]) -> Workspace:
        """Resolve the folders from the --workspace flag and the environment (read once, by the CLI)."""
        if workspace:
            root, source = Path(workspace), "--workspace"
        elif environ.get("AUTOSEG_HOME"):
            root, source = Path(environ["AUTOSEG_HOME"]), "AUTOSEG_HOME"
        else:
            root, source = DEFAULT_ROOT, "default"
        root = root.expanduser()

        def pick(sub: str, *names: str) -> Path:
            value = next((environ[n] for n in names if environ.get(n)), None)
            return Path(value).expanduser() if value else root / sub

        return cls(
            root=root,
            raw=pick("raw", "AUTOSEG_RAW", "nnUNet_raw"),
            preprocessed=pick("preprocessed", "AUTOSEG_PREPROCESSED"),
            results=pick("results", "AUTOSEG_RESULTS"),
            root_source=source,
        )

    @classmethod
    def at(cls, root: str | Path) -> Workspace:
        """A workspace with the standard layout under `root` (for the Python API and tests)."""
        root = Path(root)
        return cls(root, root / "raw", root / "preprocessed", root / "results")

    # ---- dataset ids --------------------------------------------------------------------------------
    def datasets(self) -> list[str]:
        """Names of all DatasetXXX_Name folders in raw, preprocessed and results."""
        names: set[str] = set()
        for base in (self.raw, self.preprocessed, self.results):
            if base.is_dir():
                names.update(p.name for p in base.iterdir() if p.is_dir() and _DATASET_RE.match(p.name))
        return sorted(names)

    def resolve(self, ident: str | int) -> str:
        """`4`, `004` or `Dataset004_Hippocampus` -> `Dataset004_Hippocampus`; errors list what exists."""
        text = str(ident).strip()
        existing = self.datasets()
        if text.startswith("Dataset"):
            matches = [text] if text in existing else []
        elif text.isdigit():
            matches = [n for n in existing if _DATASET_RE.match(n).group(1) == f"{int(text):03d}"]
        else:
            raise WorkspaceError(f"dataset id {text!r} is neither a number (4, 004) nor a name (Dataset004_Name)")
        if len(matches) == 1:
            return matches[0]
        where = f"{self.raw}, {self.preprocessed}, {self.results}"
        listing = ", ".join(existing) if existing else "none"
        if not matches:
            raise WorkspaceError(f"no dataset matches {text!r} in {where}. Datasets found: {listing}")
        raise WorkspaceError(f"dataset id {text!r} is ambiguous: {', '.join(matches)}. Use the full name.")

    @staticmethod
    def dataset_number(name: str) -> int:
        m = _DATASET_RE.match(name)
        if not m:
            raise WorkspaceError(f"{name!r} is not a dataset folder name (expected DatasetXXX_Name)")
        return int(m.group(1))

    # ---- paths --------------------------------------------------------------------------------------
    def raw_dataset(self, name: str) -> Path:
        return self.raw / name

    def preprocessed_dataset(self, name: str) -> Path:
        return self.preprocessed / name

    def results_dataset(self, name: str) -> Path:
        return self.results / name

    def fingerprint_file(self, name: str) -> Path:
        return self.preprocessed / name / "fingerprint.json"

    def fingerprint_table(self, name: str) -> Path:
        return self.preprocessed / name / "fingerprint_cases.csv"

    def plans_file(self, name: str, plans_name: str = "default") -> Path:
        stem = "plans" if plans_name == "default" else f"plans_{plans_name}"
        return self.preprocessed / name / f"{stem}.json"

    def splits_file(self, name: str) -> Path:
        return self.preprocessed / name / "splits.json"

    def preprocessed_config(self, name: str, data_identifier: str) -> Path:
        return self.preprocessed / name / data_identifier

    def gt_folder(self, name: str) -> Path:
        return self.preprocessed / name / "gt_segmentations"

    def run_dir(self, name: str, plans_name: str, config: str, trainer: str, fold: int | str) -> Path:
        return self.results / name / plans_name / config / trainer / f"fold_{fold}"

    def run(self, name: str, plans_name: str, config: str, trainer: str, fold: int | str) -> RunFolder:
        """The run folder of one fold (its files named by `RunFolder`)."""
        return RunFolder(self.run_dir(name, plans_name, config, trainer, fold))

    def selection_file(self, name: str) -> Path:
        return self.results / name / "selection.json"


@dataclass(frozen=True)
class RunFolder:
    """Every file of one training run, ``results/<ds>/<plans>/<config>/<trainer>/fold_<k>/``: the one place that
    spells their names (trainer, resume, validation, selection, bundles and the demo ask it)."""

    path: Path

    @property
    def latest(self) -> Path:
        """Written after every epoch; `--resume` continues from it."""
        return self.path / "checkpoint_latest.pt"

    @property
    def best(self) -> Path:
        return self.path / "checkpoint_best.pt"

    @property
    def final(self) -> Path:
        """Written when training ends: what predict, select and bundles use."""
        return self.path / "checkpoint_final.pt"

    @property
    def train_config(self) -> Path:
        return self.path / "train_config.json"

    @property
    def plans(self) -> Path:
        return self.path / "plans.json"

    @property
    def log(self) -> Path:
        """One line per epoch (the same line the console shows)."""
        return self.path / "log.txt"

    @property
    def progress_csv(self) -> Path:
        return self.path / "progress.csv"

    @property
    def progress_plot(self) -> Path:
        return self.path / "progress.png"

    @property
    def validation(self) -> Path:
        """End-of-fold validation: ``<case><ending>``, ``<case>.npz``, metrics_per_case.csv, summary.json."""
        return self.path / "validation"

    @property
    def validation_summary(self) -> Path:
        return self.validation / "summary.json"

    @property
    def crossval(self) -> Path:
        """The configuration's merged cross-validation predictions (beside the fold folders)."""
        return self.path.parent / "crossval"

    @property
    def finished(self) -> bool:
        """A fold counts as finished once it has its final checkpoint and its validation summary."""
        return self.final.is_file() and self.validation_summary.is_file()
