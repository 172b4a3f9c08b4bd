"""Geometry of an image: spacing in array-axis order plus ITK origin and direction, for exact write-back.

Arrays in autoseg are (C, Z, Y, X) as SimpleITK's ``GetArrayFromImage`` returns them (channels first). `spacing` is
given in the same array order (z, y, x), which is the order nnU-Net's fingerprints use. `origin` and `direction`
stay in ITK's physical (x, y, z) convention because they are only used to write an image back exactly.

2D images (PNG, BMP, 2D TIFF/NIfTI) are held as a single slice: array (C, 1, Y, X) and spacing (999.0, sy, sx)
(nnU-Net's convention, so 2D datasets fingerprint and plan as theirs do); `dim` = 2 tells the writer to write 2D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PSEUDO_SPACING_2D = 999.0


@dataclass(frozen=True)
class Geometry:
    spacing: tuple[float, ...]  # array order (z, y, x), always 3 values
    origin: tuple[float, ...]  # ITK physical order (x, y[, z]), `dim` values
    direction: tuple[float, ...]  # ITK row-major direction cosines, dim*dim values
    dim: int = 3  # dimension of the file on disk: 2 or 3

    def __post_init__(self) -> None:
        if len(self.spacing) != 3:
            raise ValueError(f"spacing must have 3 values (z, y, x), got {self.spacing}")
        if self.dim not in (2, 3) or len(self.origin) != self.dim or len(self.direction) != self.dim**2:
            raise ValueError(f"inconsistent geometry: dim={self.dim}, origin={self.origin}, direction={self.direction}")

    @classmethod
    def identity(cls, spacing: tuple[float, ...] = (1.0, 1.0, 1.0), dim: int = 3) -> Geometry:
        if dim == 2:
            spacing = (PSEUDO_SPACING_2D, *spacing[-2:])
        return cls(tuple(float(s) for s in spacing), (0.0,) * dim, tuple(np.eye(dim).ravel().tolist()), dim)

    @property
    def is_2d(self) -> bool:
        return self.dim == 2

    @property
    def itk_spacing(self) -> tuple[float, ...]:
        """Spacing in ITK (x, y[, z]) order for the file's dimension."""
        return tuple(reversed(self.spacing[-self.dim :]))

    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(self.dim, self.dim)

    def problems(self) -> list[str]:
        """What is physically wrong with this geometry (empty when it is usable)."""
        out = []
        if not all(math.isfinite(s) and s > 0 for s in self.spacing):
            out.append(f"spacing {self.spacing} must be finite and > 0")
        if not all(math.isfinite(o) for o in self.origin):
            out.append(f"origin {self.origin} must be finite")
        d = self.direction_matrix()
        if not np.all(np.isfinite(d)) or abs(np.linalg.det(d)) < 1e-6:
            out.append(f"direction matrix {self.direction} is singular or not finite")
        return out

    def matches(self, other: Geometry, rtol: float = 1e-4, atol: float = 1e-4) -> list[str]:
        """Differences from `other` (spacing, origin, direction, dimension), as short phrases."""
        if self.dim != other.dim:
            return [f"dimension {self.dim}D vs {other.dim}D"]
        out = []
        if not np.allclose(self.spacing, other.spacing, rtol=rtol, atol=atol):
            out.append(f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)}")
        if not np.allclose(self.origin, other.origin, rtol=rtol, atol=max(atol, 1e-3)):
            out.append(f"origin {_fmt(self.origin)} vs {_fmt(other.origin)}")
        if not np.allclose(self.direction, other.direction, atol=1e-3):
            out.append(f"direction {_fmt(self.direction)} vs {_fmt(other.direction)}")
        return out

    def transposed(self, axes: tuple[int, ...]) -> tuple[float, ...]:
        """Spacing permuted into `axes` order (the planner's transpose)."""
        return tuple(self.spacing[a] for a in axes)


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
