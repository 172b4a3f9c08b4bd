"""Read and write images with full geometry, through the registry of image formats keyed by file ending.

The formats are those registered in `autoseg.data.formats` when a function is called: the built-ins of
`autoseg.data.itk_formats` (NIfTI .nii/.nii.gz, NRRD .nrrd/.nhdr, MetaImage .mha/.mhd as 2D or 3D images; the 2D
formats PNG, BMP and TIFF .tif/.tiff, a 3D TIFF stack reads as 3D), imported here, plus any a plugin registers
(`--plugin`, AUTOSEG_PLUGINS; the modules in AUTOSEG_PLUGINS are also imported here on first use, so worker
processes know a plugin's format too). `supported_endings`, `file_ending` and `check_ending` ask the registry.

Every read returns ``(array, Geometry)`` with the array in (C, Z, Y, X) order; 2D images have Z = 1 and C > 1 only
for multi-component (RGB) pixels. What a format returns is checked here (array rank, 2D slice count, geometry), as is
the file itself before it is read (missing, broken link, empty) and, for NIfTI, its integrity (`check_nifti`).
Writes go to a temporary name in the target folder and are renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.data import itk_formats  # registers the built-in formats
from autoseg.data.formats import ImageFormat, formats, short_error
from autoseg.data.geometry import Geometry
from autoseg.data.nifti import check_nifti
from autoseg.errors import AutosegError, ImageIOError
from autoseg.registry import import_plugins
from autoseg.serialization import new_temp_file

LOSSY_ENDINGS = (".jpg", ".jpeg")
NIFTI_ENDINGS = (".nii", ".nii.gz")  # checked by `check_nifti` before they are read
_env_plugins_imported = False


def _registered() -> list[str]:
    """The registered endings, after importing the AUTOSEG_PLUGINS modules once in this process."""
    global _env_plugins_imported
    if not _env_plugins_imported:
        _env_plugins_imported = True
        import_plugins(os.environ.get("AUTOSEG_PLUGINS", "").split(","))
    return formats.names()


def supported_endings() -> tuple[str, ...]:
    """Every registered file ending, sorted (a plugin's included once it is imported)."""
    return tuple(_registered())


def natural_2d_endings() -> tuple[str, ...]:
    """The endings of PNG-like formats (pseudo spacing, multi-component pixels are RGB channels)."""
    return tuple(e for e in _registered() if formats.get(e).natural_2d)


def is_natural_2d(ending: str) -> bool:
    """Whether `ending` ('.png') is a registered PNG-like format; False for an unknown ending."""
    return ending.lower() in natural_2d_endings()


def file_ending(path: str | os.PathLike) -> str:
    """The registered ending of `path` (the longest that matches: ".nii.gz", not ".gz"), or its last suffix."""
    name = Path(path).name.lower()
    for ending in sorted(_registered(), key=len, reverse=True):
        if name.endswith(ending):
            return ending
    return Path(path).suffix.lower()


def check_ending(ending: str, where: str = "file_ending") -> None:
    """Raise ImageIOError (starting with `where`) unless `ending` is a registered, lossless format."""
    if ending.lower() in LOSSY_ENDINGS:
        raise ImageIOError(f"{where}: {ending!r} is a lossy format; use a lossless one such as .png or .nii.gz")
    known = _registered()
    if ending.lower() not in known:
        raise ImageIOError(
            f"{where}: {ending!r} is not supported (supported: {', '.join(known)}; a format of your own is "
            "registered by a plugin module: --plugin MODULE or AUTOSEG_PLUGINS)"
        )


def image_format(path: str | os.PathLike) -> ImageFormat:
    """The registered format of `path` by its ending; ImageIOError naming the file if there is none."""
    ending = file_ending(path)
    check_ending(ending, str(path))
    return formats.get(ending)


def _check_file(path: Path) -> None:
    if not path.is_file():
        if path.is_symlink():
            raise ImageIOError(f"{path}: is a broken symbolic link or a link loop (it points to no file)")
        raise ImageIOError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageIOError(f"{path}: file is empty (0 bytes)")


def _call(fmt: ImageFormat, fn: Callable[[Path], Any], path: Path) -> Any:
    """`fn(path)`; an error other than autoseg's own becomes ImageIOError naming the file and the format."""
    try:
        return fn(path)
    except (AutosegError, MemoryError):
        raise
    except Exception as exc:
        raise ImageIOError(f"{path}: cannot be read as {fmt.name} ({type(exc).__name__}: {short_error(exc)})") from exc


def _check_geometry(fmt: ImageFormat, path: Path, geo: object) -> Geometry:
    if not isinstance(geo, Geometry):
        raise ImageIOError(f"{path}: the {fmt.name} reader returned {type(geo).__name__}, not a Geometry")
    if problems := geo.problems():
        raise ImageIOError(f"{path}: invalid geometry: {'; '.join(problems)}")
    return geo


def _checked(fmt: ImageFormat, path: Path, result: tuple[np.ndarray, Geometry]) -> tuple[np.ndarray, Geometry]:
    """What a format's `read` returned, checked: a (C, Z, Y, X) array, Z = 1 for 2D geometry, usable geometry."""
    if not isinstance(result, tuple) or len(result) != 2 or not isinstance(result[0], np.ndarray):
        raise ImageIOError(f"{path}: the {fmt.name} reader must return (array, Geometry), got {type(result).__name__}")
    arr, geo = result[0], _check_geometry(fmt, path, result[1])
    if arr.ndim != 4:
        raise ImageIOError(f"{path}: the {fmt.name} reader returned shape {arr.shape}; expected (C, Z, Y, X)")
    if geo.dim == 2 and arr.shape[1] != 1:
        raise ImageIOError(f"{path}: a 2D image must have one slice (Z = 1), the {fmt.name} reader gave {arr.shape}")
    return arr, geo


def read_file(path: str | os.PathLike, check_integrity: bool = True) -> tuple[np.ndarray, Geometry]:
    """Read one file -> (array (C, Z, Y, X), Geometry). C > 1 only for multi-component (e.g. RGB) pixels.

    NIfTI files are checked first (`check_nifti`) unless `check_integrity` is False (verify scans them itself).
    """
    path = Path(path)
    fmt = image_format(path)
    _check_file(path)
    if check_integrity and file_ending(path) in NIFTI_ENDINGS:
        check_nifti(path)
    return _checked(fmt, path, _call(fmt, fmt.read, path))


def read_header(path: str | os.PathLike) -> tuple[tuple[int, ...], int, Geometry]:
    """(shape (Z, Y, X), components per pixel, Geometry) from the file's header (a format without a header reader
    is read whole). Raises ImageIOError for what the header shows: unreadable, not 2D/3D, invalid geometry."""
    path = Path(path)
    fmt = image_format(path)
    _check_file(path)
    if fmt.read_header is None:
        arr, geo = _checked(fmt, path, _call(fmt, fmt.read, path))
        return tuple(arr.shape[1:]), int(arr.shape[0]), geo
    shape, components, geo = _call(fmt, fmt.read_header, path)
    if len(shape) != 3:
        raise ImageIOError(f"{path}: the {fmt.name} header reader returned shape {shape}; expected (Z, Y, X)")
    return tuple(int(s) for s in shape), int(components), _check_geometry(fmt, path, geo)


def check_inputs(paths: Sequence[str | os.PathLike]) -> None:
    """What can be checked of a case's channel files before reading their voxels: headers, geometry (equal across
    channels), NIfTI integrity (`check_nifti`). Raises ImageIOError naming the file."""
    first = None
    for p in map(Path, paths):
        shape, _, geo = read_header(p)
        if file_ending(p) in NIFTI_ENDINGS:
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
    fmt = image_format(path)
    _check_file(path)
    if fmt.read is itk_formats.read_itk and itk_formats.file_dimension(path) == 4:
        return itk_formats.read_4d(path)
    return read_file(path)


def write_image(path: str | os.PathLike, array: np.ndarray, geometry: Geometry, compress: bool = True) -> Path:
    """Write (Z, Y, X) or (C, Z, Y, X) with `geometry` in the format of `path`'s ending, atomically (the format
    writes a temporary name in the folder, which is then renamed). `compress`: for formats that offer it.

    An OSError (disk full, no permission, the target is a folder) propagates as it is, for the caller to report;
    any other error of the format's writer becomes ImageIOError naming the file and the format."""
    path = Path(path)
    ending = file_ending(path)
    fmt = image_format(path)
    arr = np.asarray(array)
    if arr.ndim not in (3, 4) or (geometry.dim == 2 and arr.shape[-3] != 1):
        raise ImageIOError(
            f"{path}: cannot write an array of shape {arr.shape} with {geometry.dim}D geometry; expected (Z, Y, X) "
            "or (C, Z, Y, X), with Z = 1 for 2D"
        )
    options = {"compress": compress} if fmt.compression else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = new_temp_file(path, suffix=f".tmp{ending}")
    os.close(fd)
    try:
        fmt.write(Path(tmp), arr, geometry, **options)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, (AutosegError, MemoryError, OSError)) or not isinstance(exc, Exception):
            raise
        raise ImageIOError(f"{path}: cannot be written as {fmt.name} ({short_error(exc)})") from exc
    return path


def write_label(path: str | os.PathLike, labels: np.ndarray, geometry: Geometry) -> Path:
    """Write a label map (Z, Y, X) as uint8 (uint16 if a value exceeds 255)."""
    labels = np.asarray(labels)
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    return write_image(path, labels.astype(dtype, copy=False), geometry)
