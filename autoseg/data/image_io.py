"""Read and write images with full geometry. The only module that imports SimpleITK.

Supported: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) as 2D or 3D images, and the 2D
formats PNG, BMP and TIFF (.tif, .tiff; a 3D TIFF stack reads as 3D). Multi-component pixels (RGB) become channels.
Every read returns ``(array, Geometry)`` with the array in (C, Z, Y, X) order; 2D images have Z = 1.
Writes go to a temporary name in the target folder and are renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autoseg.data.geometry import PSEUDO_SPACING_2D, Geometry
from autoseg.errors import ImageIOError
from autoseg.serialization import new_temp_file

SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".bmp", ".tif", ".tiff")
NATURAL_2D_ENDINGS = (".png", ".bmp", ".tif", ".tiff")
LOSSY_ENDINGS = (".jpg", ".jpeg")


def file_ending(path: str | os.PathLike) -> str:
    """The supported ending of `path` (".nii.gz" counts as one), or its last suffix if unsupported."""
    name = Path(path).name.lower()
    for ending in SUPPORTED_ENDINGS:
        if name.endswith(ending):
            return ending
    return Path(path).suffix.lower()


def check_ending(ending: str, where: str = "file_ending") -> None:
    if ending.lower() in LOSSY_ENDINGS:
        raise ImageIOError(f"{where}: {ending!r} is a lossy format; use a lossless one such as .png or .nii.gz")
    if ending.lower() not in SUPPORTED_ENDINGS:
        raise ImageIOError(f"{where}: {ending!r} is not supported (supported: {', '.join(SUPPORTED_ENDINGS)})")


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    for marker in ("Description:", "description:"):
        if marker in text:
            text = text.split(marker, 1)[1].strip()
    return text[:200]


def _read_itk(path: Path) -> sitk.Image:
    if not path.is_file():
        if path.is_symlink():
            raise ImageIOError(f"{path}: is a broken symbolic link or a link loop (it points to no file)")
        raise ImageIOError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageIOError(f"{path}: file is empty (0 bytes)")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ImageIOError(
            f"{path}: cannot be read as an image, the file is corrupt or truncated ({_short(exc)})"
        ) from None


def _geometry(img: sitk.Image, path: Path) -> Geometry:
    dim = img.GetDimension()
    spacing = tuple(float(s) for s in reversed(img.GetSpacing()))
    if dim == 2:
        spacing = (PSEUDO_SPACING_2D, *spacing)
    geo = Geometry(spacing, tuple(float(o) for o in img.GetOrigin()), tuple(float(d) for d in img.GetDirection()), dim)
    problems = geo.problems()
    if problems:
        raise ImageIOError(f"{path}: invalid geometry: {'; '.join(problems)}")
    return geo


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
    from autoseg.data.verify import nifti_layout, scan_nifti

    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open if gz else open)(path, "rb") as fh:
            header = fh.read(540)
        with open(path, "rb") as fh:
            fh.seek(-4 if gz else 0, os.SEEK_END)
            tail_size = struct.unpack("<I", fh.read(4))[0] if gz else fh.tell()
    except (OSError, EOFError, zlib.error, struct.error) as exc:
        raise ImageIOError(
            f"{path}: cannot be read as an image, the file is corrupt or truncated ({_short(exc)})"
        ) from None
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


def read_file(path: str | os.PathLike, check_integrity: bool = True) -> tuple[np.ndarray, Geometry]:
    """Read one file -> (array (C, Z, Y, X), Geometry). C > 1 only for multi-component (e.g. RGB) pixels.

    NIfTI files are checked first (`check_nifti`) unless `check_integrity` is False (verify scans them itself).
    """
    path = Path(path)
    ending = file_ending(path)
    check_ending(ending, str(path))
    if check_integrity and ending in (".nii", ".nii.gz") and path.is_file() and path.stat().st_size:
        check_nifti(path)
    img = _read_itk(path)
    _check_dim(path, img.GetDimension())
    geo = _geometry(img, path)
    try:
        arr = sitk.GetArrayFromImage(img)
    except RuntimeError as exc:
        raise ImageIOError(f"{path}: pixel data cannot be read ({_short(exc)})") from None
    ncomp = img.GetNumberOfComponentsPerPixel()
    if ncomp > 1:  # (..., comp) -> (comp, ...)
        arr = np.moveaxis(arr, -1, 0)
    else:
        arr = arr[None]
    if img.GetDimension() == 2:
        arr = arr[:, None]
    return arr, geo


def _check_dim(path: Path, dim: int) -> None:
    if dim not in (2, 3):
        raise ImageIOError(
            f"{path}: is a {dim}D image; autoseg needs 2D or 3D files with one channel per file "
            "(a 4D MSD image can be split with `autoseg convert_msd`)"
        )


def read_header(path: str | os.PathLike) -> tuple[tuple[int, ...], int, Geometry]:
    """(shape (Z, Y, X), components per pixel, Geometry) from the file's header only (no voxel data is read).

    Raises ImageIOError for what the header alone shows: unreadable, not 2D/3D, invalid geometry."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        _read_itk(path)  # raises the not-found / link / empty-file error
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageIOError(
            f"{path}: cannot be read as an image, the file is corrupt or truncated ({_short(exc)})"
        ) from None
    _check_dim(path, reader.GetDimension())
    spacing = tuple(float(s) for s in reversed(reader.GetSpacing()))
    geo = Geometry(
        spacing if len(spacing) == 3 else (PSEUDO_SPACING_2D, *spacing),
        tuple(float(o) for o in reader.GetOrigin()),
        tuple(float(d) for d in reader.GetDirection()),
        reader.GetDimension(),
    )
    if problems := geo.problems():
        raise ImageIOError(f"{path}: invalid geometry: {'; '.join(problems)}")
    size = tuple(int(s) for s in reversed(reader.GetSize()))
    return (1, *size) if len(size) == 2 else size, int(reader.GetNumberOfComponents()), geo


def check_inputs(paths: Sequence[str | os.PathLike]) -> None:
    """What can be checked of a case's channel files before reading their voxels: headers, geometry (equal across
    channels), NIfTI integrity (`check_nifti`). Raises ImageIOError naming the file."""
    first = None
    for p in map(Path, paths):
        shape, _, geo = read_header(p)
        if file_ending(p) in (".nii", ".nii.gz"):
            check_nifti(p)
        if first is None:
            first = (p, shape, geo)
        elif shape != first[1]:
            raise ImageIOError(f"{p}: shape {shape} differs from {first[0].name} {first[1]}")
        elif diffs := geo.matches(first[2]):
            raise ImageIOError(f"{p}: geometry differs from {first[0].name}: {'; '.join(diffs)}")


def read_image(paths: Sequence[str | os.PathLike], check_integrity: bool = True) -> tuple[np.ndarray, Geometry]:
    """Read the channel files of one case -> (float32 array (C, Z, Y, X), geometry of the first file).

    Channels must agree in shape and geometry (same tolerances as `autoseg verify`).
    """
    arrays, geo = [], None
    for p in paths:
        arr, g = read_file(p, check_integrity)
        if geo is None:
            geo = g
        elif arr.shape[1:] != arrays[0].shape[1:]:
            raise ImageIOError(f"{p}: shape {arr.shape[1:]} differs from {paths[0]} {arrays[0].shape[1:]}")
        elif diffs := g.matches(geo):
            raise ImageIOError(f"{p}: geometry differs from {Path(paths[0]).name}: {'; '.join(diffs)}")
        arrays.append(arr.astype(np.float32, copy=False))
    if geo is None:
        raise ImageIOError("read_image: no files given")
    return np.concatenate(arrays, axis=0), geo


def read_label(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a label map -> (array (Z, Y, X) in its stored dtype, Geometry)."""
    arr, geo = read_file(path)
    if arr.shape[0] != 1:
        raise ImageIOError(f"{path}: a label map must have one component per pixel, found {arr.shape[0]}")
    return arr[0], geo


def read_4d(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a 3D or 4D file (MSD layout) -> (array (C, Z, Y, X), geometry of the 3D volume)."""
    path = Path(path)
    img = _read_itk(path)
    if img.GetDimension() != 4:
        return read_file(path)
    arr = sitk.GetArrayFromImage(img)  # (t, z, y, x)
    sub = sitk.Extract(img, [*img.GetSize()[:3], 0], [0, 0, 0, 0])
    return arr, _geometry(sub, path)


def _to_itk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """(Z, Y, X) or (C, Z, Y, X) with C>1 as vector pixels; Z must be 1 for 2D geometry."""
    arr = np.asarray(array)
    vector = arr.ndim == 4
    if vector and arr.shape[0] == 1:
        arr, vector = arr[0], False
    if geometry.dim == 2:
        if (arr.shape[1] if vector else arr.shape[0]) != 1:
            raise ImageIOError(f"cannot write a {arr.shape} array with 2D geometry")
        arr = arr[:, 0] if vector else arr[0]
    if vector:
        arr = np.moveaxis(arr, 0, -1)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr), isVector=vector)
    img.SetSpacing(geometry.itk_spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    return img


def write_image(path: str | os.PathLike, array: np.ndarray, geometry: Geometry, compress: bool = True) -> Path:
    """Write (Z, Y, X) or (C, Z, Y, X) with `geometry`, atomically (temporary name in the folder, then rename)."""
    path = Path(path)
    ending = file_ending(path)
    check_ending(ending, str(path))
    arr = np.asarray(array)
    if ending in (".png", ".bmp") and arr.dtype not in (np.uint8, np.uint16):
        arr = arr.astype(np.uint8 if arr.max(initial=0) < 256 and arr.min(initial=0) >= 0 else np.uint16)
    img = _to_itk(arr, geometry)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = new_temp_file(path, suffix=f".tmp{ending}")
    os.close(fd)
    try:
        sitk.WriteImage(img, tmp, useCompression=compress)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, RuntimeError):
            raise ImageIOError(f"{path}: cannot be written ({_short(exc)})") from None
        raise
    return path


def write_label(path: str | os.PathLike, labels: np.ndarray, geometry: Geometry) -> Path:
    """Write a label map (Z, Y, X) as uint8 (uint16 if a value exceeds 255)."""
    labels = np.asarray(labels)
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    return write_image(path, labels.astype(dtype, copy=False), geometry)
