"""DICOM series as prediction inputs: which folders are DICOM input, one case per series, and the modality check.

A prediction input folder is DICOM input when it holds no image file of a registered format at its top level and
has DICOM files in it or in its subfolders (a scanner's export folder, or a folder of such folders): every image
series under it (SeriesInstanceUID) is one case (`autoseg.data.dicom.series`). A series must fit the model's
channels: one series is one channel, and its Modality must be the one the model was trained on, known from the
channel name ("CT", "T2", "FLAIR", "PET", ...) or else from CT normalisation; MR into a CT model is an error naming
the series unless `force_modality`. `--output-type dicom-seg` writes each case's label map with `seg_writer`.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from autoseg.data.dicom.pixels import read_series
from autoseg.data.dicom.seg import read_dicom_seg, write_dicom_seg
from autoseg.data.dicom.series import DicomSeries, contains_dicom, scan_dicom
from autoseg.data.image_io import read_label
from autoseg.evaluation.statistics import case_statistics
from autoseg.inference.source import ModelSource

OUTPUT_TYPES = ("default", "dicom-seg")  # default: NIfTI for DICOM input, else the input's format
SEG_ENDING = ".dcm"

# words of a channel name that say which DICOM Modality the channel was acquired with
MODALITY_WORDS = {
    "CT": tuple("ct cta hu noncontrast ncct".split()),
    "MR": tuple("mr mri t1 t1w t1c t1ce t1gd t2 t2w flair adc dwi pd swi dce hbv b0".split()),
    "PT": tuple("pt pet suv fdg psma".split()),
    "US": tuple("us ultrasound".split()),
}


def expected_modality(channel_name: str, normalization: str | None = None) -> str | None:
    """The DICOM Modality that a channel named `channel_name` (normalised with `normalization`) was acquired with,
    or None when neither says ("MR0" -> MR, "CT" -> CT, "noNorm" with "ct" normalisation -> CT)."""
    words = [w for w in re.split(r"[^a-z0-9]+", channel_name.lower()) if w]
    for modality, names in MODALITY_WORDS.items():
        if any(w in names or w.rstrip("0123456789") in names for w in words):
            return modality
    return "CT" if normalization == "ct" else None


def is_dicom_input(inp: Path, image_endings: tuple[str, ...]) -> bool:
    """Whether the folder `inp` is DICOM input: no file with one of `image_endings` at its top, DICOM inside."""
    if not inp.is_dir():
        return False
    if any(p.is_file() and p.name.lower().endswith(image_endings) for p in inp.iterdir()):
        return False
    return contains_dicom(inp)


def modality_problems(series: DicomSeries, source: ModelSource, force: bool) -> list[str]:
    """The series' problems with the model's channels: a model of several channels (one series is one channel),
    a Modality other than the channel's (unless `force`)."""
    names = source.channel_names
    if len(names) != 1:
        return [
            f"{series.name}: the model takes {len(names)} channels ({', '.join(names)}); a DICOM series gives one, "
            "so predict this model from files in the imagesTs layout"
        ]
    normalization = source.plans.configurations[0].normalization[0] if source.plans.configurations else None
    expected = expected_modality(names[0], normalization)
    if force or expected is None or series.modality.upper() == expected:
        return []
    return [
        f"{series.name}: modality {series.modality or 'unknown'} but the model's channel {names[0]!r} is {expected}; "
        "use --force-modality to predict it anyway"
    ]


def dicom_series(inp: Path, source: ModelSource, force_modality: bool) -> tuple[list[DicomSeries], list[str]]:
    """(usable series, every problem) of the DICOM input folder `inp`."""
    scan = scan_dicom(inp)
    problems = list(scan.problems)
    problems += [f"{seg.path}: a DICOM-SEG object, not an image; remove it from the input folder" for seg in scan.segs]
    usable = []
    for series in scan.series:
        found = modality_problems(series, source, force_modality)
        problems += found
        if not found:
            usable.append(series)
    return usable, problems


def seg_writer(series: DicomSeries, names: dict[int, str]) -> partial:
    """The output writer of `--output-type dicom-seg` for one case: (target, labels, geometry) -> the DICOM-SEG on
    `series`' grid, its segments named by `names` (label value written -> name; `LabelScheme.written_names`). A
    partial of a module function, so that an export worker process can receive it."""
    return partial(write_dicom_seg, series=series, names={int(v): str(n) for v, n in names.items()})


def series_statistics(series: DicomSeries, target: Path, names: dict[int, str], case_id: str, channel_names) -> list:
    """`case_statistics` rows of a DICOM series predicted earlier (--continue --statistics): its output, a label
    file or a DICOM-SEG (`target`), read back on the series' grid."""
    image, geometry = read_series(series)
    if target.name.lower().endswith(SEG_ENDING):
        labels = read_dicom_seg(target, series, {str(n): int(v) for v, n in names.items()})
    else:
        labels, _ = read_label(target)
    return case_statistics(labels, image, geometry, names, case_id, channel_names)
