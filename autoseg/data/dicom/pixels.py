"""The pixels of a scanned DICOM series (`autoseg.data.dicom.series`) -> float32 array (1, Z, Y, X), rescaled.

`read_series` uses SimpleITK's GDCM series reader for a series of single-frame files that share one rescale slope
and intercept, and pydicom file by file otherwise (multi-frame images, a rescale per slice) and whenever GDCM fails.
pydicom decodes uncompressed data, RLE, and what its installed plugins decode (JPEG baseline / extended and JPEG
2000 through Pillow, JPEG-LS through pyjpegls); a transfer syntax none of them decodes (JPEG lossless process 14,
for example) is read with GDCM, which applies the rescale itself. The geometry is always the one the scan computed
from the headers.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autoseg.data.dicom.deps import pydicom, require_dicom
from autoseg.data.dicom.series import DicomSeries
from autoseg.data.geometry import Geometry
from autoseg.errors import ImageIOError


def _decode(path: Path) -> tuple[np.ndarray, bool]:
    """(pixel frames (F, Y, X), already rescaled) of one file: pydicom, else SimpleITK's GDCM (which rescales)."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise ImageIOError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {str(exc)[:200]})") from exc
    try:
        pixels = ds.pixel_array
        rescaled = False
    except (NotImplementedError, RuntimeError) as exc:  # no pydicom decoder for this transfer syntax
        try:
            pixels, rescaled = sitk.GetArrayFromImage(sitk.ReadImage(str(path))), True
        except RuntimeError as exc2:
            syntax = ds.file_meta.get("TransferSyntaxUID", "?")
            raise ImageIOError(
                f"{path}: pixel data in transfer syntax {getattr(syntax, 'name', syntax)} cannot be decoded by "
                f"pydicom ({_one_line(exc)}) nor GDCM ({_one_line(exc2)})"
            ) from exc2
    except ValueError as exc:
        raise ImageIOError(f"{path}: pixel data cannot be decoded ({str(exc)[:200]})") from exc
    pixels = np.asarray(pixels)
    return (pixels[None] if pixels.ndim == 2 else pixels), rescaled


READERS = ("auto", "gdcm", "pydicom")


def _one_line(exc: BaseException, limit: int = 160) -> str:
    return " ".join(str(exc).split())[:limit]


def read_series(series: DicomSeries, reader: str = "auto") -> tuple[np.ndarray, Geometry]:
    """(float32 array (1, Z, Y, X) with rescale slope/intercept applied, Geometry) of a scanned series.

    `reader` "auto": SimpleITK's GDCM series reader for a series of single-frame files that share one rescale
    slope and intercept (several times faster than pydicom, docs/benchmarks.md), pydicom file by file otherwise
    (multi-frame images, rescale per slice) and whenever GDCM fails; "gdcm" / "pydicom" choose one (benchmarks and
    tests). The geometry is always the one `scan_dicom` computed from the headers."""
    require_dicom(series.name)
    if reader not in READERS:
        raise ValueError(f"reader {reader!r}: expected one of {READERS}")
    single = all(s.frame is None for s in series.slices)
    one_rescale = len({(s.slope, s.intercept) for s in series.slices}) == 1
    if reader == "gdcm" or (reader == "auto" and single and one_rescale):
        try:
            return _read_gdcm(series), series.geometry
        except RuntimeError as exc:
            if reader == "gdcm":
                raise ImageIOError(f"{series.name}: GDCM cannot read it ({str(exc)[:300]})") from exc
    return _read_pydicom(series), series.geometry


def _read_gdcm(series: DicomSeries) -> np.ndarray:
    """The series' pixels through SimpleITK's GDCM series reader, in scan order (GDCM applies the rescale)."""
    if not all(s.frame is None for s in series.slices):
        raise RuntimeError("the GDCM series reader takes single-frame files only")
    image = sitk.ReadImage([str(s.path) for s in series.slices], sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(image)
    if arr.shape != series.shape:
        raise RuntimeError(f"GDCM read shape {arr.shape}, the headers say {series.shape}")
    return arr[None]


def _read_pydicom(series: DicomSeries) -> np.ndarray:
    """The series' pixels decoded with pydicom file by file (`_decode`), rescaled per slice (per frame)."""
    out = np.empty(series.shape, dtype=np.float32)
    by_file = defaultdict(list)
    for z, s in enumerate(series.slices):
        by_file[s.path].append((z, s))
    for path, items in by_file.items():
        frames, rescaled = _decode(path)
        for z, s in items:
            index = 0 if s.frame is None else s.frame
            if index >= len(frames) or frames[index].shape != s.size:
                raise ImageIOError(f"{path}: pixel data of shape {frames.shape} does not hold frame {index + 1} of "
                                   f"size {s.size}")  # fmt: skip
            frame = frames[index].astype(np.float32)
            out[z] = frame if rescaled else frame * np.float32(s.slope) + np.float32(s.intercept)
    return out[None]
