"""DICOM-SEG with highdicom: a label map on a series' grid -> one SEG object, and a SEG object -> a label map.

`write_dicom_seg` writes one binary DICOM-SEG per case: one segment per label present in the label map, named with
the dataset's label names and numbered 1, 2, ... in label order (DICOM wants consecutive segment numbers); labels
without a voxel are left out and logged (when no label has a voxel the SEG keeps every label as an empty segment, so
that a SEG exists for every case). Its frames reference the source series' instances (single-frame series) or
frames (multi-frame images); highdicom copies the patient, study and frame-of-reference attributes from the source
and the SEG gets new series and instance UIDs. The file is written beside its target and renamed (atomic).

`read_dicom_seg` maps a SEG back onto a scanned series: segment k becomes the label value its SegmentLabel has in
`label_names`; a SEG whose frames are not the series' slices, unknown segment names and overlapping segments are
errors naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from autoseg import __version__
from autoseg.data.dicom.deps import load_highdicom, pydicom, require_dicom
from autoseg.data.dicom.series import DicomSeries
from autoseg.data.geometry import Geometry
from autoseg.errors import DatasetError, ImageIOError
from autoseg.log import logger
from autoseg.serialization import atomic_target

ALGORITHM_NAME = "autoseg"


def _codes():
    """(segmented property category, type, algorithm family) as highdicom coded concepts."""
    load_highdicom()  # which imports pydicom.sr
    codes = pydicom.sr.codedict.codes
    return codes.SCT.Tissue, codes.SCT.Tissue, codes.cid7162.ArtificialIntelligence


def _source_datasets(series: DicomSeries) -> list:
    try:
        return [pydicom.dcmread(p, stop_before_pixels=True) for p in series.files]
    except Exception as exc:
        raise ImageIOError(f"{series.name}: source headers cannot be read again ({str(exc)[:200]})") from exc


def _source_order(labels: np.ndarray, series: DicomSeries) -> np.ndarray:
    """`labels` (Z, Y, X, slice order) rearranged into the order highdicom pairs with the sources: one frame per
    source file for single-frame series, the source frames' order for a multi-frame image."""
    if all(s.frame is None for s in series.slices):
        return labels
    if len(series.files) != 1:
        raise ImageIOError(f"{series.name}: a DICOM-SEG for a series of several multi-frame files is not supported")
    out = np.zeros_like(labels)
    for z, s in enumerate(series.slices):
        out[s.frame] = labels[z]
    return out


def write_dicom_seg(path: str | os.PathLike, labels: np.ndarray, geometry: Geometry, *, series: DicomSeries,
                    names: dict[int, str], description: str = "autoseg segmentation") -> Path:  # fmt: skip
    """Write `labels` (Z, Y, X) on `series`' grid as one DICOM-SEG at `path`; `names`: label value -> name (a value
    without a name is called "label <value>"). Returns `path`."""
    require_dicom(str(path))
    path = Path(path)
    labels = np.asarray(labels)
    if labels.shape != series.shape:
        raise ImageIOError(f"{path}: label map of shape {labels.shape} is not on the grid of {series.name} "
                           f"{series.shape}")  # fmt: skip
    if diffs := geometry.matches(series.geometry):
        raise ImageIOError(f"{path}: label map geometry differs from {series.name}: {'; '.join(diffs)}")
    present = [int(v) for v in np.unique(labels) if v > 0]
    names = {int(v): str(n) for v, n in names.items() if int(v) > 0} | {
        v: f"label {v}" for v in present if v not in names
    }
    empty = [names[v] for v in sorted(names) if v not in present]
    keep = present or sorted(names)
    if empty and present:
        logger.info(f"{path.name}: label(s) without a voxel left out of the DICOM-SEG: {', '.join(empty)}")
    elif not present:
        logger.warning(f"{path.name}: no label has a voxel; the DICOM-SEG holds {len(keep)} empty segment(s)")
    numbers = np.zeros(max(keep) + 1, dtype=np.uint8 if len(keep) < 256 else np.uint16)
    for k, v in enumerate(keep, start=1):
        numbers[v] = k
    mask = numbers[np.clip(labels, 0, max(keep)).astype(np.intp)] * (labels <= max(keep))
    category, kind, family = _codes()
    highdicom = load_highdicom()
    algorithm = highdicom.AlgorithmIdentificationSequence(name=ALGORITHM_NAME, family=family, version=__version__)
    segments = [
        highdicom.seg.SegmentDescription(
            segment_number=k, segment_label=names[v], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type="AUTOMATIC", algorithm_identification=algorithm,
        )
        for k, v in enumerate(keep, start=1)
    ]  # fmt: skip
    seg = highdicom.seg.Segmentation(
        source_images=_source_datasets(series),
        pixel_array=_source_order(mask, series),
        segmentation_type="BINARY",
        segment_descriptions=segments,
        series_instance_uid=highdicom.UID(),
        series_number=int(series_number(series)),
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
        manufacturer=ALGORITHM_NAME,
        manufacturer_model_name=ALGORITHM_NAME,
        software_versions=__version__,
        device_serial_number="none",
        series_description=description[:64],
        content_label="AUTOSEG",
        omit_empty_frames=bool(present),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path, suffix=".tmp.dcm") as tmp:
        seg.save_as(tmp)
    return path


def series_number(series: DicomSeries) -> int:
    """The SEG's series number: the source's plus 1000 (kept in range), so viewers list it beside its source."""
    try:
        number = int(pydicom.dcmread(series.files[0], stop_before_pixels=True).get("SeriesNumber", 0) or 0)
    except Exception:  # the number is cosmetic; an unreadable header is reported by the reader
        number = 0
    return (number % 1000) + 1000


def read_dicom_seg(path: str | os.PathLike, series: DicomSeries, label_names: dict[str, int]) -> np.ndarray:
    """The label map (Z, Y, X, uint8/uint16) of the SEG at `path` on `series`' grid. Segments are matched to
    `label_names` by SegmentLabel (case-insensitive); raises DatasetError naming the file for a SEG that does not
    reference this series' slices, a segment name not in `label_names`, or overlapping segments."""
    require_dicom(str(path))
    path = Path(path)
    try:
        seg = load_highdicom().seg.segread(path)
    except Exception as exc:
        raise ImageIOError(f"{path}: not a readable DICOM-SEG ({type(exc).__name__}: {str(exc)[:200]})") from exc
    lookup = {n.lower(): v for n, v in label_names.items()}
    values, unknown = {}, []
    for number in seg.get_segment_numbers():
        name = str(seg.get_segment_description(number).segment_label)
        if name.lower() in lookup:
            values[number] = lookup[name.lower()]
        else:
            unknown.append(name)
    if unknown:
        raise DatasetError(f"{path}: segment(s) {', '.join(map(repr, unknown))} are not among the labels "
                           f"{', '.join(n for n, v in label_names.items() if v > 0)} (--labels)")  # fmt: skip
    if all(s.frame is None for s in series.slices):
        try:
            masks = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=[s.sop_instance_uid for s in series.slices],
                segment_numbers=sorted(values), assert_missing_frames_are_empty=True,
            )  # fmt: skip
        except (ValueError, KeyError, AttributeError) as exc:
            where = f"the slices of {series.name}"
            raise DatasetError(f"{path}: its frames do not lie on {where} ({str(exc)[:200]})") from exc
    else:
        raise DatasetError(f"{path}: DICOM-SEG masks for multi-frame source images are not supported")
    masks = np.asarray(masks) > 0  # (Z, Y, X, segments)
    if masks.shape[:3] != series.shape:
        raise DatasetError(f"{path}: masks of shape {masks.shape[:3]} are not on the grid of {series.name}")
    if (masks.sum(-1) > 1).any():
        raise DatasetError(f"{path}: segments overlap in {(masks.sum(-1) > 1).sum()} voxel(s); a label map needs "
                           "disjoint segments")  # fmt: skip
    top = max(values.values(), default=0)
    out = np.zeros(series.shape, dtype=np.uint8 if top < 256 else np.uint16)
    for k, number in enumerate(sorted(values)):
        out[masks[..., k]] = values[number]
    return out
