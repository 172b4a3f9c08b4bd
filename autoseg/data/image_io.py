"""Read and write images with full geometry. The only module that imports SimpleITK.

Supported: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) as 2D or 3D images, and the 2D
formats PNG, BMP and TIFF (.tif, .tiff; a 3D TIFF stack reads as 3D). Multi-component pixels (RGB) become channels.
Every read returns ``(array, Geometry)`` with the array in (C, Z, Y, X) order; 2D images have Z = 1.
Writes go to a temporary name in the target folder and are renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import os
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


def read_file(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read one file -> (array (C, Z, Y, X), Geometry). C > 1 only for multi-component (e.g. RGB) pixels."""
    path = Path(path)
    ending = file_ending(path)
    check_ending(ending, str(path))
    img = _read_itk(path)
    dim = img.GetDimension()
    if dim not in (2, 3):
        raise ImageIOError(
            f"{path}: is a {dim}D image; autoseg needs 2D or 3D files with one channel per file "
            "(a 4D MSD image can be split with `autoseg convert_msd`)"
        )
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
    if dim == 2:
        arr = arr[:, None]
    return arr, geo


def read_image(paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, Geometry]:
    """Read the channel files of one case -> (float32 array (C, Z, Y, X), geometry of the first file).

    Geometry consistency between channels is checked by `autoseg verify`; here a shape mismatch is an error.
    """
    arrays, geo = [], None
    for p in paths:
        arr, g = read_file(p)
        if geo is None:
            geo = g
        elif arr.shape[1:] != arrays[0].shape[1:]:
            raise ImageIOError(f"{p}: shape {arr.shape[1:]} differs from {paths[0]} {arrays[0].shape[1:]}")
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
