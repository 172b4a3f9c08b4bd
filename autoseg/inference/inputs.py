"""The cases of a prediction input: a folder in the imagesTs layout (CASE_0000.ext, ...) or one image file.

`scan_inputs` groups channel files into cases and collects every missing or extra channel file; `list_inputs` raises
them as one error. `input_problems` checks the files of the cases to predict before anything is written: every
unreadable, empty, truncated or corrupt file, every case whose channel count the model does not take and every
case whose channel files disagree in shape or geometry, each as one line "PATH: what is wrong" (headers only, plus
the NIfTI integrity check; no voxel data is decoded). `parse_part` reads --part K/N (the K-th of N interleaved
shares of the sorted case list).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoseg.data.dicom.pixels import read_series
from autoseg.data.dicom.series import DicomSeries
from autoseg.data.geometry import Geometry
from autoseg.data.image_io import file_ending, read_header, read_image, supported_endings
from autoseg.data.nifti import check_nifti
from autoseg.errors import ConfigError, DatasetError, ImageIOError, problems_error
from autoseg.inference.dicom_inputs import dicom_series, is_dicom_input
from autoseg.inference.source import ModelSource

DICOM_DEFAULT_ENDING = ".nii.gz"  # a DICOM series' label map, unless --output-type dicom-seg


@dataclass(frozen=True)
class InputCase:
    case_id: str
    files: tuple[Path, ...]
    ending: str
    series: DicomSeries | None = None  # a DICOM series (autoseg.inference.dicom_inputs): its files, checked


def read_case(case: InputCase) -> tuple[np.ndarray, Geometry]:
    """(float32 image (C, Z, Y, X), Geometry) of a case whose files `input_problems` has checked."""
    if case.series is not None:
        return read_series(case.series)
    return read_image(case.files, check_integrity=False)


def _split_name(path: Path) -> tuple[str, int | None, str] | None:
    """'a_0001.nii.gz' -> ('a', 1, '.nii.gz'); 'a.nii.gz' -> ('a', None, '.nii.gz'); None if not an image name."""
    ending = file_ending(path)
    if ending not in supported_endings() or path.name.startswith(".") or not path.is_file():
        return None
    stem = path.name[: -len(ending)]
    m = re.match(r"^(.+)_(\d{4})$", stem)
    return (m.group(1), int(m.group(2)), ending) if m else (stem, None, ending)


def scan_inputs(
    inp: str | Path, source: ModelSource, force_modality: bool = False
) -> tuple[list[InputCase], list[str]]:
    """(cases, naming problems) of a folder in imagesTs layout (CASE_0000.ext, CASE_0001.ext, ...) or of one file.

    `source` is the ModelSource (files_per_case, channel_names, file_ending say what a case needs). Every file name
    problem of the folder is collected ("PATH: what is wrong"): names without a channel index, mixed endings, extra
    and missing channel files; a case with a missing channel file is left out of the cases. A folder of DICOM files
    (or of such folders) gives one case per image series (`dicom_inputs`; `force_modality` skips the check that the
    series' Modality is the model's). Raises at once only when there is nothing to scan: `inp` does not exist, is
    an unsupported or multi-channel single file, or holds no image file.
    """
    inp, n = Path(inp), source.files_per_case
    need = f"the model needs {n} channel file(s) per case: " + ", ".join(
        f"_{i:04d} ({c})" for i, c in enumerate(source.channel_names[:n])
    )
    if inp.is_file():
        parts = _split_name(inp)
        if parts is None:
            raise ImageIOError(f"{inp}: not an image file of a supported format")
        if n != 1:
            raise DatasetError(f"{inp}: a single file can only be predicted by a one-channel model; {need}")
        return [InputCase(parts[0], (inp,), parts[2])], []
    if not inp.is_dir():
        raise DatasetError(f"{inp}: input folder or file not found")
    if is_dicom_input(inp, supported_endings()):
        series, problems = dicom_series(inp, source, force_modality)
        if not series and not problems:
            raise DatasetError(f"{inp}: no DICOM image series found")
        return [InputCase(s.case_id, s.files, DICOM_DEFAULT_ENDING, s) for s in series], problems
    found: dict[str, dict[int, Path]] = {}
    endings: dict[str, str] = {}
    problems = []
    for p in sorted(inp.iterdir()):
        if p.is_symlink() and not p.exists():
            problems.append(f"{p}: is a broken symbolic link or a link loop (it points to no file)")
            continue
        parts = _split_name(p)
        if parts is None:
            continue
        cid, ch, ending = parts
        if ch is None and n == 1:
            ch = 0
        elif ch is None:
            problems.append(f"{p}: name does not end in _XXXX (channel index); {need}")
            continue
        if endings.setdefault(cid, ending) != ending:
            problems.append(f"{p}: case {cid!r} mixes file endings {endings[cid]!r} and {ending!r}")
        found.setdefault(cid, {})[ch] = p
    cases = []
    for cid, chans in sorted(found.items()):
        missing = [i for i in range(n) if i not in chans]
        problems += [
            f"case {cid!r}: channel file {inp / f'{cid}_{i:04d}{endings[cid]}'} is missing; {need}" for i in missing
        ]
        problems += [f"{chans[i]}: channel {i} is more than the model takes; {need}" for i in chans if i >= n]
        if not missing:
            cases.append(InputCase(cid, tuple(chans[i] for i in sorted(chans) if i < n), endings[cid]))
    if not cases and not problems:
        raise DatasetError(
            f"{inp}: no image files found (expected CASE_0000{source.file_ending}, ..., or DICOM series)"
        )
    return cases, problems


def list_inputs(inp: str | Path, source: ModelSource) -> list[InputCase]:
    """Cases of a folder in imagesTs layout (CASE_0000.ext, CASE_0001.ext, ...) or of a single file.

    `source` is the ModelSource (files_per_case, channel_names, file_ending say what a case needs). Raises one
    DatasetError naming every file name problem (`scan_inputs`).
    """
    cases, problems = scan_inputs(inp, source)
    if problems:
        raise problems_error(problems)
    return cases


def _file_problem(path: Path) -> tuple[tuple[int, ...], int, Geometry] | str:
    """(shape, components, geometry) of one channel file from its header, or what is wrong with it: cannot be
    opened, empty, not an image, corrupt or truncated (NIfTI: `check_nifti`), not 2D/3D, invalid geometry."""
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        return f"{path}: cannot be opened (permission denied)"
    except OSError:
        pass  # missing, a link loop, ...: read_header says which
    try:
        header = read_header(path)
        if file_ending(path) in (".nii", ".nii.gz"):
            check_nifti(path)
    except ImageIOError as exc:
        return str(exc)
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror or exc})"
    return header


def _case_problems(case: InputCase, expected_channels: int) -> list[str]:
    """Every problem of one case's channel files: each unreadable file, then (when all are readable) a channel
    count the model does not take and channel files whose shape or geometry differ from the first one's. A DICOM
    series was checked when it was scanned."""
    if case.series is not None:
        return []
    headers = {p: _file_problem(p) for p in case.files}
    problems = [h for h in headers.values() if isinstance(h, str)]
    if problems:
        return problems
    components = {p: h[1] for p, h in headers.items()}
    total = sum(components.values())
    if total != expected_channels:
        if len(case.files) == 1:
            problems.append(
                f"{case.files[0]}: the image has {total} channel(s) ({total} component(s) per pixel), "
                f"the model expects {expected_channels}"
            )
        else:
            named = [p for p, c in components.items() if c != 1] or list(case.files)
            problems += [
                f"{p}: has {components[p]} component(s) per pixel, so case {case.case_id!r} has {total} channel(s) "
                f"in {len(case.files)} files; the model expects {expected_channels}"
                for p in named
            ]
    first, (shape0, _, geo0) = case.files[0], headers[case.files[0]]
    for p in case.files[1:]:
        shape, _, geo = headers[p]
        if shape != shape0:
            problems.append(f"{p}: shape {shape} differs from {first.name} {shape0}")
        elif diffs := geo.matches(geo0):
            problems.append(f"{p}: geometry differs from {first.name}: {'; '.join(diffs)}")
    return problems


def input_problems(cases: Sequence[InputCase], expected_channels: int) -> list[str]:
    """Every problem of the files of `cases`, one "PATH: what is wrong" line each, found from the headers (and the
    NIfTI integrity check) without decoding voxel data: files that cannot be opened, are empty, corrupt, truncated,
    not 2D/3D or of invalid geometry; cases whose channel count (files x components per pixel) differs from
    `expected_channels`; channel files whose shape or geometry differ within a case. Empty when all can be read.
    """
    return [problem for case in cases for problem in _case_problems(case, expected_channels)]


def parse_part(part: str) -> tuple[int, int]:
    """'2/4' -> (2, 4): the second of four interleaved shares of the sorted case list."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(part))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ConfigError(f"--part {part!r}: expected K/N with 1 <= K <= N, e.g. --part 1/2")
    return int(m.group(1)), int(m.group(2))
