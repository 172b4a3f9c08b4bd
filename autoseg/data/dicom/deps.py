"""The optional DICOM libraries (pydicom, highdicom), imported once and guarded: without them autoseg still imports,
and `require_dicom` raises an ImageIOError naming the extra to install (with the ImportError as its cause)."""

from __future__ import annotations

from autoseg.errors import ImageIOError

INSTALL_HINT = 'pip install -e ".[dicom]"'

try:
    import highdicom
    import pydicom
    from pydicom.errors import InvalidDicomError

    MISSING: ImportError | None = None
except ImportError as exc:  # the extra is not installed: the DICOM functions say so when called
    highdicom = pydicom = None
    InvalidDicomError = ValueError
    MISSING = exc


def require_dicom(what: str) -> None:
    """Raise ImageIOError starting with `what` unless pydicom and highdicom are importable."""
    if MISSING is not None:
        raise ImageIOError(
            f"{what}: DICOM support needs pydicom and highdicom, which cannot be imported ({MISSING}); "
            f"install them with: {INSTALL_HINT}"
        ) from MISSING
