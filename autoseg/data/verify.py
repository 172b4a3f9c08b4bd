"""Integrity check of a raw dataset: every problem of dataset.json and of every case, collected before reporting.

`verify_dataset(folder, jobs)` returns a `VerifyReport`; each problem is one line "path: what is wrong", sorted so
that two runs print the same text. Case files are read in parallel (joblib, one case per task, so memory stays at
about one case per worker). Nothing here raises for a broken dataset: unreadable files become problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from joblib.externals.loky.process_executor import TerminatedWorkerError

from autoseg.data.dataset import (
    Case,
    DatasetSpec,
    image_case_ids,
    list_cases,
    num_training_problem,
    parse_dataset_json,
)
from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_file, supported_endings
from autoseg.data.labels import parse_labels
from autoseg.data.nifti import scan_nifti
from autoseg.data.workers import workers_for_cases
from autoseg.errors import DatasetError, ImageIOError
from autoseg.log import progress
from autoseg.serialization import load_json


@dataclass(frozen=True)
class VerifyReport:
    dataset: str
    n_cases: int
    problems: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    n_channels: int = 0
    label_values: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line for a clean dataset, e.g. "Dataset004_Hippocampus: 260 cases, 1 channel, labels 0-2: OK"."""
        ch = f"{self.n_channels} channel{'s' if self.n_channels != 1 else ''}"
        labels = f"labels {min(self.label_values)}-{max(self.label_values)}" if self.label_values else "no labels"
        return f"{self.dataset}: {self.n_cases} cases, {ch}, {labels}: {'OK' if self.ok else 'FAILED'}"

    def problem_text(self) -> str:
        """A count header followed by one problem per line."""
        n = len(self.problems)
        head = f"{self.dataset}: {n} problem{'s' if n != 1 else ''} found ({self.n_cases} cases):"
        return "\n".join([head, *self.problems])


@dataclass(frozen=True)
class Expectation:
    """What every case must satisfy, derived from dataset.json (label_values None: labels unknown, not checked)."""

    rgb: bool
    n_channels: int
    label_values: tuple[int, ...] | None


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    problems: tuple[str, ...]
    first_file: Path | None  # the file that fixed the case's dimension
    dim: int | None  # 2 or 3, None if no image could be read
    label_values: tuple[int, ...]


# ---- per case (runs in worker processes) -----------------------------------------------------------------------
def _read(path: Path, problems: list[str]) -> tuple[np.ndarray, Geometry] | None:
    broken, non_finite = scan_nifti(path)
    problems += [p for p in (broken, non_finite) if p]
    if broken:
        return None
    try:
        return read_file(path, check_integrity=non_finite is None)  # NaN already reported: read the geometry
    except ImageIOError as exc:
        problems.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - any reader failure is a finding about this file, not a crash
        problems.append(f"{path}: cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")
    return None


def _component_problems(path: Path, n_comp: int, expect: Expectation) -> list[str]:
    if expect.rgb and n_comp != 3:
        kind = "a grayscale file" if n_comp == 1 else f"{n_comp} components per pixel"
        return [f"{path}: is {kind} but channel_names declares 3 channels (R, G, B) held in one RGB file"]
    if not expect.rgb and n_comp != 1:
        return [
            f"{path}: has {n_comp} components per pixel (RGB/vector file) but dataset.json expects one channel "
            f"per file ({expect.n_channels} channel(s) in channel_names)"
        ]
    return []


def _finite_problems(path: Path, arr: np.ndarray) -> list[str]:
    if not np.issubdtype(arr.dtype, np.floating) or np.isfinite(arr).all():
        return []
    n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
    return [f"{path}: contains {n_nan} NaN and {n_inf} Inf voxels"]


def _geometry_problems(path: Path, shape: tuple, geo: Geometry, ref: tuple[Path, tuple, Geometry]) -> list[str]:
    ref_path, ref_shape, ref_geo = ref
    out = []
    if shape != ref_shape:
        out.append(f"{path}: shape {shape} differs from {ref_path.name} {ref_shape}")
    diffs = geo.matches(ref_geo)
    if diffs:
        out.append(f"{path}: geometry differs from {ref_path.name}: {'; '.join(diffs)}")
    return out


def _label_values(path: Path, lab: np.ndarray, expect: Expectation) -> tuple[tuple[int, ...], list[str]]:
    problems = []
    if np.issubdtype(lab.dtype, np.floating):
        finite = np.isfinite(lab)
        if not finite.all():
            problems.append(f"{path}: label map contains {int((~finite).sum())} NaN/Inf voxels")
            lab = lab[finite]
        frac = lab != np.round(lab)
        if frac.any():
            problems.append(
                f"{path}: label map holds non-integer values (e.g. {lab[frac].flat[0]:g}); labels must be integers"
            )
        lab = np.round(lab).astype(np.int64)
    if lab.size and lab.min() >= 0 and lab.max() < 65536:
        values = np.flatnonzero(np.bincount(lab.ravel().astype(np.int64)))
    else:
        values = np.unique(lab)
    values = tuple(int(v) for v in values)
    if expect.label_values is not None:
        undeclared = sorted(set(values) - set(expect.label_values))
        if undeclared:
            declared = ", ".join(map(str, expect.label_values))
            problems.append(
                f"{path}: label values {undeclared} are not declared in dataset.json's labels (declared: {declared})"
            )
    return values, problems


def check_case(case: Case, expect: Expectation) -> CaseResult:
    """Read one case's channel files and label; return every problem found (never raises for bad files)."""
    problems: list[str] = []
    ref: tuple[Path, tuple, Geometry] | None = None
    for path in case.images:
        got = _read(path, problems)
        if got is None:
            continue
        arr, geo = got
        problems += _component_problems(path, arr.shape[0], expect)
        problems += _finite_problems(path, arr)
        if ref is None:
            ref = (path, arr.shape[1:], geo)
        else:
            problems += _geometry_problems(path, arr.shape[1:], geo, ref)
        del arr
    values: tuple[int, ...] = ()
    got = _read(case.label, problems) if case.label is not None else None
    if got is not None:
        lab, geo = got
        if lab.shape[0] != 1:
            problems.append(f"{case.label}: a label map must have one component per pixel, found {lab.shape[0]}")
        if ref is not None:
            problems += _geometry_problems(case.label, lab.shape[1:], geo, ref)
        values, found = _label_values(case.label, lab[0], expect)
        problems += found
    dim = ref[2].dim if ref else None
    return CaseResult(case.case_id, tuple(problems), ref[0] if ref else None, dim, values)


def loaded_case_problems(
    case: Case, image: np.ndarray, geo: Geometry, label: np.ndarray | None, label_geo: Geometry | None,
    label_values: tuple[int, ...] | None,
) -> list[str]:  # fmt: skip
    """Checks on a case already read by fingerprint/preprocess (image (C, Z, Y, X), label (Z, Y, X)): non-finite
    voxels, label shape/geometry against the image, undeclared or non-integer label values. Cheap: one pass."""
    files = case.images if len(case.images) == image.shape[0] else (case.images[0],) * image.shape[0]
    problems = [p for c, path in enumerate(files) for p in _finite_problems(path, image[c])]
    if label is not None and case.label is not None:
        problems += _geometry_problems(case.label, label.shape, label_geo, (case.images[0], image.shape[1:], geo))
        problems += _label_values(case.label, label, Expectation(False, 0, label_values))[1]
    return problems


# ---- dataset level -----------------------------------------------------------------------------------------------
def _fallback_spec(folder: Path) -> tuple[DatasetSpec | None, tuple[int, ...] | None]:
    """A best-effort spec from a dataset.json with problems, so that the case files can still be checked."""
    try:
        data = load_json(folder / "dataset.json")
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    channels, ending = data.get("channel_names", data.get("modality")), data.get("file_ending")
    if not isinstance(channels, dict) or not isinstance(ending, str) or ending.lower() not in supported_endings():
        return None, None
    if set(channels) != {str(i) for i in range(len(channels))}:
        return None, None
    labels = data.get("labels")
    scheme = parse_labels(labels, data.get("regions_class_order"))[0]
    n = data.get("numTraining")
    spec = DatasetSpec(
        folder=folder,
        name=folder.name,
        channel_names=tuple(str(channels[str(i)]) for i in range(len(channels))),
        labels=dict(labels) if scheme is not None else {},
        num_training=n if type(n) is int else -1,
        file_ending=ending,
        regions_class_order=scheme.regions_class_order if scheme is not None else None,
    )
    return spec, scheme.file_values if scheme is not None else None


def _run(cases: list[Case], expect: Expectation, jobs: int) -> list[CaseResult]:
    jobs = workers_for_cases(jobs, cases, "verify")
    bar = {"total": len(cases), "desc": "verify", "unit": "case"}
    if jobs <= 1 or len(cases) <= 1:
        return [check_case(c, expect) for c in progress(cases, **bar)]

    tasks = (delayed(check_case)(c, expect) for c in cases)
    try:
        return list(progress(Parallel(n_jobs=jobs, backend="loky", return_as="generator")(tasks), **bar))
    except TerminatedWorkerError as exc:
        raise DatasetError(
            f"{cases[0].images[0].parent}: a verify worker process died ({exc.__class__.__name__}); "
            "probably out of memory or a crash inside the image reader. Rerun with fewer jobs (-j 1)."
        ) from exc


def _mixed_dim_problems(results: list[CaseResult]) -> list[str]:
    dims = {r.dim for r in results if r.dim is not None}
    if len(dims) < 2:
        return []
    count = {d: sum(r.dim == d for r in results) for d in dims}
    minority = min(dims, key=lambda d: (count[d], d))
    other = 5 - minority
    return [
        f"{r.first_file}: is {minority}D while {count[other]} other case(s) are {other}D (2D and 3D cases are mixed)"
        for r in results
        if r.dim == minority
    ]


def _dataset_level(spec: DatasetSpec, check_count: bool) -> tuple[list[Case], list[str], list[str], int]:
    cases, problems = list_cases(spec)
    n_found = len(image_case_ids(spec))
    count_problem = num_training_problem(spec, n_found) if check_count else None
    if count_problem is not None:
        problems.append(count_problem)
    warnings = []
    if (spec.folder / "imagesTs").is_dir():
        warnings += [f"{p} (imagesTs)" for p in list_cases(spec, "imagesTs", None)[1]]
    return cases, problems, warnings, n_found


def verify_dataset(folder: str | Path, jobs: int = 2) -> VerifyReport:
    """Check dataset.json and every training case of the raw dataset in `folder`; collect all problems.

    Args:
        folder: the dataset folder (holding dataset.json, imagesTr/, labelsTr/).
        jobs: worker processes reading cases in parallel (1 = in this process).
    Returns:
        VerifyReport with sorted problems (empty when the dataset is usable) and warnings.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return VerifyReport(folder.name, 0, (f"{folder}: dataset folder does not exist",))
    spec, problems = parse_dataset_json(folder)
    expected = spec.label_values if spec else None
    if spec is None:
        spec, expected = _fallback_spec(folder)
    if spec is None:
        note = (f"{folder}: case files were not checked because dataset.json is unusable",)
        return VerifyReport(folder.name, 0, tuple(sorted(problems)), note)
    cases, found, warnings, n_found = _dataset_level(spec, spec.num_training >= 0)
    problems += found
    expect = Expectation(spec.rgb, spec.num_channels, expected)
    results = _run(cases, expect, jobs)
    for r in results:
        problems += r.problems
    problems += _mixed_dim_problems(results)
    present = set().union(*(r.label_values for r in results)) if results else set()
    if expected is not None and results:
        warnings += [
            f"{folder / 'dataset.json'}: label {v} is declared but appears in no label file"
            for v in expected
            if v not in present
        ]
    return VerifyReport(
        folder.name, n_found, tuple(sorted(set(problems))), tuple(sorted(warnings)), spec.num_channels, expected or ()
    )
