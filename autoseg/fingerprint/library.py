"""The fingerprint library (``dataset_fingerprints/`` in the repository): fingerprints of well-known datasets.

The planner reads these without any image data. `build_msd_library` converts the ten MSD-like planner reference
cases (nnU-Net ``dataset_fingerprint.json`` + ``dataset.json``, modeled on published medians and ranges) into
autoseg's schema; real datasets are added with ``autoseg fingerprint`` and copied in.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from autoseg.errors import FingerprintError
from autoseg.fingerprint.fingerprint import DatasetFingerprint
from autoseg.fingerprint.nnunet_compat import from_nnunet
from autoseg.serialization import load_json

MSD_SOURCE = (
    "Synthetic fingerprint modeled on the published medians and ranges of {task} "
    "(shared/reference/msd-properties.md); per-case spacings and shapes are stratified draws and the intensity "
    "statistics come from 200k samples of a plausible foreground mixture (planner_cases/{case}/case_info.json); "
    "converted by autoseg.fingerprint.library.build_msd_library from planner_cases/{case}/fingerprint.json + "
    "dataset.json. Not a measurement of real images."
)


def msd_case_dirs(planner_cases: str | Path) -> list[Path]:
    """The ``msdNN_*`` folders of a planner reference-case folder, sorted."""
    dirs = sorted(p for p in Path(planner_cases).glob("msd[0-9][0-9]_*") if p.is_dir())
    if not dirs:
        raise FingerprintError(f"{planner_cases}: no msdNN_* case folders found")
    return dirs


def convert_msd_case(case_dir: str | Path) -> DatasetFingerprint:
    """One planner reference case -> DatasetFingerprint named after the MSD task, with its `source` note."""
    case_dir = Path(case_dir)
    fp = from_nnunet(case_dir / "fingerprint.json", case_dir / "dataset.json")
    info = case_dir / "case_info.json"
    label = load_json(info).get("modeled_on") if info.is_file() else None
    label = label or f"MSD {case_dir.name}"
    return dataclasses.replace(fp, dataset=case_dir.name, source=MSD_SOURCE.format(task=label, case=case_dir.name))


def build_msd_library(planner_cases: str | Path, out_dir: str | Path) -> list[Path]:
    """Convert every ``msdNN_*`` case of `planner_cases` to ``out_dir/msdNN_name.json`` (atomic writes)."""
    out_dir = Path(out_dir)
    return [convert_msd_case(d).save(out_dir / f"{d.name}.json") for d in msd_case_dirs(planner_cases)]


def load_library(folder: str | Path) -> dict[str, DatasetFingerprint]:
    """All ``*.json`` fingerprints of a library folder, by file stem."""
    return {p.stem: DatasetFingerprint.load(p) for p in sorted(Path(folder).glob("*.json"))}
