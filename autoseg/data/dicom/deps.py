"""The optional DICOM libraries (pydicom, highdicom), guarded: without them autoseg still imports, and
`require_dicom` raises an ImageIOError naming the extra to install (with the ImportError as its cause).

pydicom is imported here; highdicom (0.4 s with the coded concepts of pydicom.sr it loads) only on the first
DICOM-SEG, through `load_highdicom`, so a `predict` on NIfTI files does not pay for it.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

from autoseg.errors import ImageIOError

INSTALL_HINT = 'pip install -e ".[dicom]"'

try:
    import pydicom
    from pydicom.errors import InvalidDicomError

    if importlib.util.find_spec("highdicom") is None:
        raise ImportError("No module named 'highdicom'")
    MISSING: ImportError | None = None
except ImportError as exc:  # the extra is not installed: the DICOM functions say so when called
    pydicom = None
    InvalidDicomError = ValueError
    MISSING = exc


def load_highdicom() -> ModuleType:
    """highdicom, imported on first use (call `require_dicom` first for the error naming the extra)."""
    import highdicom  # optional extra, loaded on the first DICOM-SEG (see the module docstring)

    return highdicom


def require_dicom(what: str) -> None:
    """Raise ImageIOError starting with `what` unless pydicom and highdicom are importable."""
    if MISSING is not None:
        raise ImageIOError(
            f"{what}: DICOM support needs pydicom and highdicom, which cannot be imported ({MISSING}); "
            f"install them with: {INSTALL_HINT}"
        ) from MISSING
