"""NIfTI files read byte by byte: the header's layout, and the defects that ITK's reader hides (a truncated file or
gzip stream read as zeros, NaN/Inf voxels read as 0, a non-finite spacing). Used by every reader of NIfTI inputs
(`image_io.read_file`, verify, predict's and evaluate's input checks, MSD conversion).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoseg.data.formats import short_error
from autoseg.errors import ImageIOError


@dataclass(frozen=True)
class NiftiLayout:
    end: int  # bytes the file must hold: header + voxel data
    offset: int  # where the voxel data starts
    float_dtype: np.dtype | None  # set for float32/float64 voxels, whose NaN/Inf need a raw scan


def nifti_layout(header: bytes) -> NiftiLayout | None:
    """Parse the first 540 bytes of a NIfTI-1/2 file (either byte order); None if they are not a NIfTI header."""
    for order in "<>":
        size = struct.unpack(order + "i", header[:4])[0] if len(header) >= 4 else 0
        if size == 348 and len(header) >= 348:
            dims, (datatype, bitpix) = (
                struct.unpack(order + "8h", header[40:56]),
                struct.unpack(order + "2h", header[70:74]),
            )
            offset = int(struct.unpack(order + "f", header[108:112])[0])
        elif size == 540 and len(header) >= 540:
            dims, (datatype, bitpix) = (
                struct.unpack(order + "8q", header[16:80]),
                struct.unpack(order + "2h", header[12:16]),
            )
            offset = struct.unpack(order + "q", header[168:176])[0]
        else:
            continue
        if not 1 <= dims[0] <= 7 or any(d < 1 for d in dims[1 : dims[0] + 1]) or bitpix < 1:
            return None
        offset = max(offset, size)
        dtype = {16: np.dtype(order + "f4"), 64: np.dtype(order + "f8")}.get(datatype)
        return NiftiLayout(offset + math.prod(dims[1 : dims[0] + 1]) * bitpix // 8, offset, dtype)
    return None


def scan_nifti(path: Path) -> tuple[str | None, str | None]:
    """Defects of a .nii/.nii.gz file visible only in its raw bytes, which ITK's reader hides: a truncated file
    or gzip stream (read as zeros) and NaN/Inf voxels (read as 0). Returns (broken, non-finite) problem texts.
    Streams the file, so memory stays small."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")) or not path.is_file() or path.stat().st_size == 0:
        return None, None
    n_bad, total = [0, 0], 0
    try:
        with (gzip.open if name.endswith(".gz") else open)(path, "rb") as fh:
            chunk, pos, carry = fh.read(540), 0, b""
            layout = nifti_layout(chunk)
            while chunk:
                total += len(chunk)
                if layout is not None and layout.float_dtype is not None:
                    data = carry + chunk[max(layout.offset - pos, 0) : max(layout.end - pos, 0)]
                    usable = len(data) - len(data) % layout.float_dtype.itemsize
                    values, carry = np.frombuffer(data[:usable], layout.float_dtype), data[usable:]
                    n_bad[0] += int(np.isnan(values).sum())
                    n_bad[1] += int(np.isinf(values).sum())
                pos += len(chunk)
                chunk = fh.read(1 << 22)
    except (EOFError, OSError, zlib.error) as exc:
        return f"{path}: file is truncated or corrupt ({' '.join(str(exc).split())[:150]})", None
    if layout is not None and total < layout.end:
        return f"{path}: file is truncated: the header announces {layout.end} bytes but only {total} are present", None
    if any(n_bad):
        return (
            None,
            f"{path}: contains {n_bad[0]} NaN and {n_bad[1]} Inf voxels (the reader would silently make them 0)",
        )
    return None, None


def _pixdim(header: bytes) -> tuple[float, ...]:
    """The spacing fields (pixdim[1..ndim]) of a NIfTI-1/2 header, either byte order; () if not NIfTI."""
    for order in "<>":
        size = struct.unpack(order + "i", header[:4])[0] if len(header) >= 4 else 0
        if size == 348 and len(header) >= 348:
            ndim, pix = struct.unpack(order + "h", header[40:42])[0], struct.unpack(order + "8f", header[76:108])
        elif size == 540 and len(header) >= 540:
            ndim, pix = struct.unpack(order + "q", header[16:24])[0], struct.unpack(order + "8d", header[104:168])
        else:
            continue
        return tuple(pix[1 : 1 + min(max(int(ndim), 0), 7)])
    return ()


def check_nifti(path: Path) -> None:
    """Raise ImageIOError for NIfTI defects that ITK's reader hides: a truncated file or gzip stream (read as
    zeros), NaN/Inf voxels of float images (read as 0) and a non-finite header spacing.

    Cost: the header and, for .nii.gz, the gzip trailer (the stored uncompressed size) are read; the whole file is
    streamed only when these disagree or when the voxels are floats (NaN/Inf scan, about one more decompression).
    """
    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open if gz else open)(path, "rb") as fh:
            header = fh.read(540)
        with open(path, "rb") as fh:
            fh.seek(-4 if gz else 0, os.SEEK_END)
            tail_size = struct.unpack("<I", fh.read(4))[0] if gz else fh.tell()
    except (OSError, EOFError, zlib.error, struct.error) as exc:
        raise ImageIOError(
            f"{path}: cannot be read as an image, the file is corrupt or truncated ({short_error(exc)})"
        ) from exc
    layout = nifti_layout(header)
    if layout is None:
        return  # not a NIfTI header: ITK's reader reports it
    pixdim = _pixdim(header)
    if not all(math.isfinite(s) for s in pixdim):
        raise ImageIOError(f"{path}: the header's voxel spacing (pixdim) {pixdim} is not finite")
    intact = tail_size == layout.end % 2**32 if gz else tail_size >= layout.end
    if intact and layout.float_dtype is None:
        return
    broken, non_finite = scan_nifti(path)
    if broken or non_finite:
        raise ImageIOError(broken or non_finite)
