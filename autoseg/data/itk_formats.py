"""The built-in image formats, read and written through SimpleITK (the only module that imports it).

NIfTI (.nii.gz, .nii), NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd) as 2D or 3D images; the natural-2D formats
PNG, BMP and TIFF (.tif, .tiff; a 3D TIFF stack reads as 3D). Multi-component pixels (RGB) become channels, 2D
images get the pseudo spacing of `Geometry` (Z = 1). Each is registered in `autoseg.data.formats` with
`register_format` on import, as a plugin's format is; `read_4d` and `file_dimension` serve the MSD conversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autoseg.data.formats import ImageFormat, WriteFn, register_format, short_error
from autoseg.data.geometry import PSEUDO_SPACING_2D, Geometry
from autoseg.errors import ImageIOError


def _corrupt(path: Path, exc: Exception) -> ImageIOError:
    return ImageIOError(f"{path}: cannot be read as an image, the file is corrupt or truncated ({short_error(exc)})")


def _read_itk(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise _corrupt(path, exc) from exc


def _check_dim(path: Path, dim: int) -> None:
    if dim not in (2, 3):
        raise ImageIOError(
            f"{path}: is a {dim}D image; autoseg needs 2D or 3D files with one channel per file "
            "(a 4D MSD image can be split with `autoseg convert_msd`)"
        )


def _checked_geometry(
    path: Path, spacing_xyz: Sequence[float], origin: Sequence[float], direction: Sequence[float], dim: int
) -> Geometry:
    spacing = tuple(float(s) for s in reversed(spacing_xyz))
    if dim == 2:
        spacing = (PSEUDO_SPACING_2D, *spacing)
    geo = Geometry(spacing, tuple(float(o) for o in origin), tuple(float(d) for d in direction), dim)
    if problems := geo.problems():
        raise ImageIOError(f"{path}: invalid geometry: {'; '.join(problems)}")
    return geo


def _geometry(img: sitk.Image, path: Path) -> Geometry:
    return _checked_geometry(path, img.GetSpacing(), img.GetOrigin(), img.GetDirection(), img.GetDimension())


def read_itk(path: Path) -> tuple[np.ndarray, Geometry]:
    """A 2D or 3D file -> (array (C, Z, Y, X), Geometry); C > 1 only for multi-component (e.g. RGB) pixels."""
    img = _read_itk(path)
    _check_dim(path, img.GetDimension())
    geo = _geometry(img, path)
    try:
        arr = sitk.GetArrayFromImage(img)
    except RuntimeError as exc:
        raise ImageIOError(f"{path}: pixel data cannot be read ({short_error(exc)})") from exc
    arr = np.moveaxis(arr, -1, 0) if img.GetNumberOfComponentsPerPixel() > 1 else arr[None]  # (..., comp) first
    return (arr[:, None] if img.GetDimension() == 2 else arr), geo


def _reader(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _corrupt(path, exc) from exc
    return reader


def read_itk_header(path: Path) -> tuple[tuple[int, ...], int, Geometry]:
    """(shape (Z, Y, X), components per pixel, Geometry) from the file's header only (no voxel data is read)."""
    reader = _reader(path)
    _check_dim(path, reader.GetDimension())
    geo = _checked_geometry(path, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), reader.GetDimension())
    size = tuple(int(s) for s in reversed(reader.GetSize()))
    return (1, *size) if len(size) == 2 else size, int(reader.GetNumberOfComponents()), geo


def file_dimension(path: Path) -> int:
    """The dimension of the image in `path` (2, 3, 4, ...) from its header."""
    return int(_reader(path).GetDimension())


def read_4d(path: Path) -> tuple[np.ndarray, Geometry]:
    """A 4D file (MSD layout) -> (array (T, Z, Y, X), geometry of its first 3D volume)."""
    img = _read_itk(path)
    if img.GetDimension() != 4:
        raise ImageIOError(f"{path}: is a {img.GetDimension()}D image, expected 4D")
    arr = sitk.GetArrayFromImage(img)  # (t, z, y, x)
    sub = sitk.Extract(img, [*img.GetSize()[:3], 0], [0, 0, 0, 0])
    return arr, _geometry(sub, path)


def _to_itk(path: Path, array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """(Z, Y, X) or (C, Z, Y, X) with C > 1 as vector pixels; Z must be 1 for 2D geometry."""
    arr = np.asarray(array)
    vector = arr.ndim == 4
    if vector and arr.shape[0] == 1:
        arr, vector = arr[0], False
    if geometry.dim == 2:
        if (arr.shape[1] if vector else arr.shape[0]) != 1:
            raise ImageIOError(f"{path}: cannot write a {arr.shape} array with 2D geometry (Z must be 1)")
        arr = arr[:, 0] if vector else arr[0]
    if vector:
        arr = np.moveaxis(arr, 0, -1)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr), isVector=vector)
    img.SetSpacing(geometry.itk_spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    return img


def write_itk(path: Path, array: np.ndarray, geometry: Geometry, compress: bool = True) -> None:
    """Write with `geometry`; RuntimeError from ITK is left to the caller (it knows the file's final name)."""
    sitk.WriteImage(_to_itk(path, array, geometry), str(path), useCompression=compress)


def write_8_16_bit(path: Path, array: np.ndarray, geometry: Geometry, compress: bool = True) -> None:
    """PNG and BMP hold 8 or 16 bits per component: other types become uint8 (values in [0, 255]) or uint16."""
    arr = np.asarray(array)
    if arr.dtype not in (np.uint8, np.uint16):
        arr = arr.astype(np.uint8 if arr.max(initial=0) < 256 and arr.min(initial=0) >= 0 else np.uint16)
    write_itk(path, arr, geometry, compress)


def _itk_format(
    name: str, endings: tuple[str, ...], natural_2d: bool = False, write: WriteFn = write_itk
) -> ImageFormat:
    return ImageFormat(name, endings, read_itk, write, read_itk_header, natural_2d=natural_2d, compression=True)


NIFTI = register_format(_itk_format("NIfTI", (".nii.gz", ".nii")))
NRRD = register_format(_itk_format("NRRD", (".nrrd", ".nhdr")))
METAIMAGE = register_format(_itk_format("MetaImage", (".mha", ".mhd")))
PNG = register_format(_itk_format("PNG", (".png",), natural_2d=True, write=write_8_16_bit))
BMP = register_format(_itk_format("BMP", (".bmp",), natural_2d=True, write=write_8_16_bit))
TIFF = register_format(_itk_format("TIFF", (".tif", ".tiff"), natural_2d=True))
