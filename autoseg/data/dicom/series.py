"""DICOM image series -> (array (1, Z, Y, X) float32, Geometry) in SimpleITK's convention.

`scan_dicom(folder)` reads the headers (no pixel data) of every DICOM file under `folder` (recursively; a file is
DICOM when it carries the "DICM" marker or ends in .dcm/.dicom/.ima), groups the image files by SeriesInstanceUID
(one case per series) and checks each series: one orientation, one size and pixel spacing, slices that lie along the
normal of ImageOrientationPatient at even gaps (a missing slice, a repeated position, a gantry tilt are named).
Localizer (scout) images, ImageType LOCALIZER, are skipped with a log line.
Every problem is collected, one "PATH or series: what is wrong" line each: unreadable or truncated files, objects
without pixel data (structured reports, presentation states), DICOM-SEG objects (kept apart in `DicomScan.segs` for
`convert_dicom`), and bad series. Multi-frame (enhanced) images are read frame by frame from their functional groups.

Geometry: DICOM patient coordinates (LPS) are ITK's physical coordinates, so the direction matrix's columns are the
row cosines, the column cosines and their cross product (the slice normal); slices are sorted by position along that
normal, the origin is the first slice's ImagePositionPatient, the slice spacing the mean gap between positions.
The pixels are read by `autoseg.data.dicom.pixels.read_series`.
"""

from __future__ import annotations

import os
import re
import struct
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoseg.data.dicom.deps import InvalidDicomError, pydicom, require_dicom
from autoseg.data.geometry import Geometry
from autoseg.errors import ImageIOError
from autoseg.log import logger

DICOM_ENDINGS = (".dcm", ".dicom", ".ima")
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
DEFER_BYTES = 4096  # pixel data (and other long values) are not read while scanning headers
ORIENTATION_ATOL = 1e-4
GAP_RTOL = 0.01  # a gap may differ from the mean by 1 % (scanners round positions)


@dataclass(frozen=True)
class DicomSlice:
    """One 2D image of a series: a single-frame file, or one frame of a multi-frame file."""

    path: Path
    frame: int | None  # frame index in a multi-frame file; None for a single-frame file
    position: tuple[float, float, float]  # ImagePositionPatient (mm, LPS)
    orientation: tuple[float, ...]  # ImageOrientationPatient: row cosines, then column cosines
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm
    size: tuple[int, int]  # (Rows, Columns)
    slope: float
    intercept: float
    sop_instance_uid: str


@dataclass(frozen=True)
class DicomSeries:
    """One image series (one case), its slices ordered along the slice normal."""

    uid: str
    case_id: str
    modality: str
    description: str
    slices: tuple[DicomSlice, ...]
    geometry: Geometry

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.slices), *self.slices[0].size)

    @property
    def files(self) -> tuple[Path, ...]:
        """The series' files, each once, in slice order."""
        return tuple(dict.fromkeys(s.path for s in self.slices))

    @property
    def name(self) -> str:
        """How messages name the series: its case id, folder, description and UID."""
        where = os.path.commonpath([str(p.parent) for p in self.files])
        desc = f" {self.description!r}" if self.description else ""
        return f"series {self.case_id}{desc} in {where} (SeriesInstanceUID {self.uid})"


@dataclass(frozen=True)
class DicomSeg:
    """A DICOM-SEG object found while scanning, and the image series it references."""

    path: Path
    referenced_series: tuple[str, ...]


@dataclass(frozen=True)
class DicomScan:
    series: tuple[DicomSeries, ...]
    segs: tuple[DicomSeg, ...]
    problems: tuple[str, ...]  # "PATH: what is wrong", one per line


# ---- finding files ------------------------------------------------------------------------------------------------
def is_dicom_file(path: Path) -> bool:
    """Whether `path` is a DICOM candidate: a DICOM ending, or the "DICM" marker after the 128-byte preamble."""
    if path.name.lower().endswith(DICOM_ENDINGS):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def dicom_files(folder: Path) -> list[Path]:
    """DICOM candidates under `folder` (recursively, sorted; hidden files and DICOMDIR are skipped)."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if not name.startswith(".") and name.upper() != "DICOMDIR" and path.is_file() and is_dicom_file(path):
                found.append(path)
    return found


def contains_dicom(folder: Path) -> bool:
    """Whether `folder` holds a DICOM candidate (stops at the first one)."""
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(not n.startswith(".") and is_dicom_file(Path(root) / n) for n in names):
            return True
    return False


# ---- headers ------------------------------------------------------------------------------------------------------
def read_dicom_header(path: Path):
    """The dataset without its pixel values (deferred), after checking that the file holds all of them."""
    require_dicom(str(path))
    if path.stat().st_size == 0:
        raise ImageIOError(f"{path}: file is empty (0 bytes)")
    try:
        ds = pydicom.dcmread(path, defer_size=DEFER_BYTES)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise ImageIOError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {str(exc)[:200]})") from exc
    raw = ds.get_item("PixelData") if "PixelData" in ds else None
    if raw is not None and hasattr(raw, "value_tell") and raw.length != 0xFFFFFFFF:
        if path.stat().st_size < raw.value_tell + raw.length:
            raise ImageIOError(
                f"{path}: truncated: the pixel data needs {raw.length} bytes, the file ends "
                f"{raw.value_tell + raw.length - path.stat().st_size} bytes short"
            )
        syntax = ds.file_meta.get("TransferSyntaxUID") if "file_meta" in dir(ds) else None
        if syntax is None or not getattr(syntax, "is_compressed", False):
            need = _pixel_bytes(ds)
            if need is not None and raw.length < need:
                raise ImageIOError(
                    f"{path}: the pixel data holds {raw.length} bytes, the header (Rows x Columns x frames x "
                    f"BitsAllocated) needs {need}"
                )
    return ds


def _pixel_bytes(ds) -> int | None:
    """Bytes of uncompressed pixel data that the header describes; None when an attribute is missing."""
    try:
        rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        frames, samples = int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    return (rows * cols * frames * samples * bits + 7) // 8


def _floats(value, n: int, what: str, path: Path) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ImageIOError(f"{path}: {what} {value!r} is not {n} numbers") from exc
    if len(out) != n or not all(np.isfinite(out)):
        raise ImageIOError(f"{path}: {what} {value!r} is not {n} finite numbers")
    return out


def _group_value(groups, keyword: str, attribute: str):
    """`attribute` from the first functional group (per-frame first, then shared) holding `keyword`."""
    for group in groups:
        if group is not None and keyword in group and len(group[keyword].value) and attribute in group[keyword][0]:
            return group[keyword][0][attribute].value
    return None


def _slices(ds, path: Path) -> list[DicomSlice]:
    """The 2D images of one image file; ImageIOError when it cannot be placed in 3D."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or cols < 1:
        raise ImageIOError(f"{path}: Rows/Columns missing or zero")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise ImageIOError(f"{path}: colour images ({ds.get('PhotometricInterpretation')}) are not supported")
    uid = str(ds.get("SOPInstanceUID", ""))
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    n = int(ds.get("NumberOfFrames", 1) or 1)
    out = []
    for i in range(n):
        if per_frame is not None or shared is not None:
            groups = (per_frame[i] if per_frame is not None and i < len(per_frame) else None, shared)
            pos = _group_value(groups, "PlanePositionSequence", "ImagePositionPatient")
            ori = _group_value(groups, "PlaneOrientationSequence", "ImageOrientationPatient")
            spacing = _group_value(groups, "PixelMeasuresSequence", "PixelSpacing")
            slope = _group_value(groups, "PixelValueTransformationSequence", "RescaleSlope")
            intercept = _group_value(groups, "PixelValueTransformationSequence", "RescaleIntercept")
        elif n > 1:
            raise ImageIOError(f"{path}: {n} frames without per-frame positions cannot be placed in 3D")
        else:
            pos, ori = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
            spacing = ds.get("PixelSpacing")
            slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        missing = [k for k, v in (("ImagePositionPatient", pos), ("ImageOrientationPatient", ori),
                                  ("PixelSpacing", spacing)) if v is None]  # fmt: skip
        if missing:
            frame = f" (frame {i + 1})" if n > 1 else ""
            raise ImageIOError(
                f"{path}{frame}: no {' / '.join(missing)}: not a cross-sectional image that can be placed in 3D"
            )
        out.append(
            DicomSlice(
                path, i if n > 1 or per_frame is not None else None,
                _floats(pos, 3, "ImagePositionPatient", path), _floats(ori, 6, "ImageOrientationPatient", path),
                _floats(spacing, 2, "PixelSpacing", path), (rows, cols),
                1.0 if slope is None else float(slope), 0.0 if intercept is None else float(intercept), uid,
            )
        )  # fmt: skip
    return out


# ---- series -------------------------------------------------------------------------------------------------------
def _normal(orientation: tuple[float, ...]) -> np.ndarray:
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    return np.cross(row, col)


def order_slices(slices: list[DicomSlice], label: str) -> tuple[list[DicomSlice], Geometry]:
    """Slices sorted along the normal and the series' Geometry; ImageIOError naming the series (`label`) when the
    slices are not one even stack: several orientations, sizes or pixel spacings, repeated positions, missing
    slices (uneven gaps), positions off the normal (gantry tilt)."""
    first = slices[0]

    def differ(attr: str, what: str) -> None:
        values = defaultdict(list)
        for s in slices:
            key = tuple(np.round(np.asarray(getattr(s, attr), dtype=float), 4))
            values[key].append(s.path.name)
        if len(values) > 1:
            shown = "; ".join(f"{k} in {len(v)} slice(s), e.g. {v[0]}" for k, v in list(values.items())[:3])
            raise ImageIOError(f"{label}: {len(values)} different {what} in one series ({shown})")

    if any(not np.allclose(s.orientation, first.orientation, atol=ORIENTATION_ATOL) for s in slices):
        differ("orientation", "orientations (ImageOrientationPatient)")
    differ("size", "image sizes (Rows, Columns)")
    differ("pixel_spacing", "pixel spacings")
    row, col = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:])
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise ImageIOError(f"{label}: ImageOrientationPatient {first.orientation} is not two orthogonal unit vectors")
    normal = _normal(first.orientation)
    normal /= np.linalg.norm(normal)
    ordered = sorted(slices, key=lambda s: float(np.asarray(s.position) @ normal))
    positions = np.asarray([s.position for s in ordered])
    along = positions @ normal
    dz = 1.0
    if len(ordered) > 1:
        gaps = np.diff(along)

        def where(i: int) -> str:
            return f"{_slice_name(ordered[i])} and {_slice_name(ordered[i + 1])}"

        if gaps[i := int(np.argmin(gaps))] < 1e-3:
            raise ImageIOError(
                f"{label}: two slices at the same position {along[i]:.3f} mm along the normal ({where(i)}); a series "
                "must be one stack (several acquisitions or time points in one series are not supported)"
            )
        step = float(np.median(gaps))
        bad = np.flatnonzero(np.abs(gaps - step) > GAP_RTOL * step)
        if bad.size:
            i = int(bad[0])
            hint = f"; about {round(gaps[i] / step) - 1} slice(s) missing" if gaps[i] > 1.5 * step else ""
            raise ImageIOError(
                f"{label}: uneven slice gaps: {gaps[i]:.4g} mm between {where(i)} (positions {along[i]:.4g} and "
                f"{along[i + 1]:.4g} mm along the normal) where the others are {step:.4g} mm{hint}"
            )
        offsets = positions - positions[0] - np.outer(along - along[0], normal)
        if np.abs(offsets).max() > 0.01 * min(first.pixel_spacing):
            raise ImageIOError(
                f"{label}: slice positions are not along the normal of ImageOrientationPatient (a gantry tilt or a "
                f"sheared stack, off by up to {np.abs(offsets).max():.3g} mm); resample it to an orthogonal grid first"
            )
        dz = float((along[-1] - along[0]) / (len(ordered) - 1))
    direction = np.stack([row, col, normal], axis=1)  # columns: the x, y, z axes
    geometry = Geometry(
        (dz, first.pixel_spacing[0], first.pixel_spacing[1]),
        tuple(float(v) for v in positions[0]),
        tuple(float(v) for v in direction.ravel()),
        3,
    )
    if problems := geometry.problems():
        raise ImageIOError(f"{label}: invalid geometry: {'; '.join(problems)}")
    return ordered, geometry


def _slice_name(s: DicomSlice) -> str:
    return s.path.name if s.frame is None else f"{s.path.name} frame {s.frame + 1}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_.") or "x"


def _case_ids(root: Path, groups: dict[str, list[DicomSlice]], headers: dict[str, object]) -> dict[str, str]:
    """Case id per series: its folder (relative to `root`) when that folder holds only this series, else
    PATIENTID_S<SeriesNumber>, with the UID's last part added where two series would share a name."""
    folders = defaultdict(set)
    for uid, slices in groups.items():
        for s in slices:
            folders[s.path.parent].add(uid)
    names = {}
    for uid, slices in groups.items():
        parents = {s.path.parent for s in slices}
        parent = next(iter(parents))
        if len(parents) == 1 and parent != root and folders[parent] == {uid}:
            names[uid] = _safe(str(parent.relative_to(root)).replace(os.sep, "_"))
        else:
            ds = headers[uid]
            names[uid] = _safe(f"{ds.get('PatientID', '') or 'dicom'}_S{ds.get('SeriesNumber', '') or 'x'}")
    counts = defaultdict(int)
    for name in names.values():
        counts[name] += 1
    return {uid: (f"{n}_{_safe(uid.split('.')[-1])}" if counts[n] > 1 else n) for uid, n in names.items()}


def scan_dicom(folder: str | os.PathLike) -> DicomScan:
    """Every image series under `folder` (sorted by case id), the DICOM-SEG objects, and every problem found."""
    require_dicom(str(folder))
    root = Path(folder)
    problems: list[str] = []
    groups: dict[str, list[DicomSlice]] = defaultdict(list)
    headers: dict[str, object] = {}
    segs, localizers = [], []
    for path in dicom_files(root):
        try:
            ds = read_dicom_header(path)
        except ImageIOError as exc:
            problems.append(str(exc))
            continue
        if "LOCALIZER" in [str(v).upper() for v in (ds.get("ImageType") or [])]:
            localizers.append(path)  # scout images: a plane or three, never a volume to segment
            continue
        if str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS:
            refs = tuple(str(r.SeriesInstanceUID) for r in ds.get("ReferencedSeriesSequence", []))
            segs.append(DicomSeg(path, refs))
            continue
        if "PixelData" not in ds:
            kind = ds.get("SOPClassUID")
            kind = getattr(kind, "name", kind) or "unknown SOP class"
            problems.append(f"{path}: a DICOM object without pixel data ({kind}, modality {ds.get('Modality', '?')})"
                            ", not an image; remove it from the input folder")  # fmt: skip
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            problems.append(f"{path}: no SeriesInstanceUID")
            continue
        try:
            groups[uid].extend(_slices(ds, path))
        except ImageIOError as exc:
            problems.append(str(exc))
            continue
        headers.setdefault(uid, ds)
    if localizers:
        logger.info(f"{root}: {len(localizers)} localizer image(s) skipped (ImageType LOCALIZER), e.g. {localizers[0]}")
    ids = _case_ids(root, groups, headers)
    series = []
    for uid, slices in groups.items():
        ds = headers[uid]
        label = f"series {ids[uid]} ({len(slices)} slices in {slices[0].path.parent}, SeriesInstanceUID {uid})"
        try:
            ordered, geometry = order_slices(slices, label)
        except ImageIOError as exc:
            problems.append(str(exc))
            continue
        modality = str(ds.get("Modality", "") or "")
        series.append(DicomSeries(uid, ids[uid], modality, str(ds.get("SeriesDescription", "") or ""),
                                  tuple(ordered), geometry))  # fmt: skip
    return DicomScan(tuple(sorted(series, key=lambda s: s.case_id)), tuple(segs), tuple(problems))
