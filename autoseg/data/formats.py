"""Image formats as a registry keyed by file ending, so a plugin can add its own reader and writer.

An `ImageFormat` bundles what autoseg needs of a file format: `read` (path -> array (C, Z, Y, X), Geometry),
`write` (path, array, Geometry), an optional `read_header` (path -> shape (Z, Y, X), components, Geometry; without
it autoseg reads the whole file to learn these) and `natural_2d` (a PNG-like format: 2D geometry with the pseudo
spacing `PSEUDO_SPACING_2D`, multi-component pixels are RGB channels, so an R, G, B dataset has one file per case).

`register_format(fmt)` registers it under each of its endings (a duplicate ending is an error, nothing is registered
then); `formats.unregister(ending)` removes one. The built-in formats (NIfTI, NRRD, MetaImage, PNG, BMP, TIFF) are
registered the same way by `autoseg.data.itk_formats`; callers go through `autoseg.data.image_io`, which imports
them, so the registry is complete there. A user's format::

    # my_formats.py (imported with --plugin my_formats or AUTOSEG_PLUGINS=my_formats)
    from autoseg.data.formats import ImageFormat, register_format

    register_format(ImageFormat("My format", (".myimg",), read=read_myimg, write=write_myimg))

`write` gets a temporary name with the format's ending in the target folder and must write that one file; autoseg
renames it into place (a reader never sees half a file). Errors other than autoseg's own raised by `read`,
`read_header` or `write` reach the user as ImageIOError naming the file and the format (an OSError of `write`, e.g.
a full disk, propagates as it is).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoseg.data.geometry import Geometry
from autoseg.errors import ConfigError
from autoseg.registry import Registry

ReadFn = Callable[[Path], tuple[np.ndarray, Geometry]]
HeaderFn = Callable[[Path], tuple[tuple[int, ...], int, Geometry]]
WriteFn = Callable[..., None]  # (path, array, geometry) plus `compress` when the format declares `compression`


@dataclass(frozen=True)
class ImageFormat:
    """Reader and writer of one file format (see the module docstring for what each callable must do).

    `read` returns the array in (C, Z, Y, X) order (C: components per pixel, Z = 1 for a 2D image) and its Geometry;
    `write` gets a (Z, Y, X) array or a (C, Z, Y, X) one with C > 1 components; `compression`: `write` takes a
    `compress: bool` keyword (``write_image(..., compress=False)`` asks for an uncompressed file).
    """

    name: str
    endings: tuple[str, ...]
    read: ReadFn
    write: WriteFn
    read_header: HeaderFn | None = None
    natural_2d: bool = False
    compression: bool = False


formats: Registry[ImageFormat] = Registry("image format ending")


def _check_ending_name(fmt: ImageFormat, ending: str) -> None:
    if not isinstance(ending, str) or not ending.startswith(".") or len(ending) < 2 or ending != ending.lower():
        raise ConfigError(
            f"image format {fmt.name!r}: ending {ending!r} must be a lower-case file ending starting with '.', "
            "e.g. '.nii.gz'"
        )


def register_format(fmt: ImageFormat) -> ImageFormat:
    """Register `fmt` under each of its endings; returns it. An ending that another format holds is a ConfigError
    (remove that one first with ``formats.unregister(ending)``), and then none of `fmt`'s endings is registered."""
    if not fmt.endings:
        raise ConfigError(f"image format {fmt.name!r}: has no file endings")
    for ending in fmt.endings:
        _check_ending_name(fmt, ending)
        if ending in formats and formats.get(ending) is not fmt:
            raise ConfigError(
                f"image format {fmt.name!r}: ending {ending!r} is already registered by "
                f"{formats.get(ending).name!r}; remove it first with formats.unregister({ending!r})"
            )
    for ending in fmt.endings:
        formats.register(ending, fmt)
    return fmt


def unregister_format(fmt: ImageFormat) -> None:
    """Remove every ending under which `fmt` is registered (those another format holds are left alone)."""
    for ending in fmt.endings:
        if ending in formats and formats.get(ending) is fmt:
            formats.unregister(ending)


def short_error(exc: BaseException) -> str:
    """One line of at most 200 characters from an exception's text (ITK's are long; the part after
    "Description:" says what is wrong)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for marker in ("Description:", "description:"):
        if marker in text:
            text = text.split(marker, 1)[1].strip()
    return text[:200]
