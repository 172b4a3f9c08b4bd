"""Deterministic synthetic datasets in the raw layout: the demo's CT-like data and the tests' tiny datasets.

A case is a body (an ellipsoid of soft tissue at about 40 HU in air at -1000 HU) holding two organs of different
size and contrast (deformed ellipsoids, labels 1 and 2), with Gaussian noise. Spacing varies per case around the
requested spacing; every third case can be given an oblique direction matrix.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import write_image, write_label
from autoseg.serialization import atomic_write_text


def _ellipsoid(grid: tuple[np.ndarray, ...], center, radii, rng: np.random.Generator, wobble: float) -> np.ndarray:
    d = sum(((g - c) / r) ** 2 for g, c, r, n in zip(grid, center, radii, grid[0].shape) if n > 1)  # flat axes: 2D
    y, x = grid[1], grid[2]
    if wobble:
        phase = rng.uniform(0, 2 * np.pi, 3)
        d = d * (1 + wobble * np.sin(3 * y / max(radii[1], 1) + phase[0]) * np.cos(2 * x / max(radii[2], 1) + phase[1]))
    return d <= 1.0


def synthetic_case(shape, rng: np.random.Generator, n_labels: int = 2, n_channels: int = 1, ct: bool = True):
    """One case -> (image (C, Z, Y, X) float32, label (Z, Y, X) uint8)."""
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    c = np.array(shape, dtype=float) / 2 + rng.uniform(-0.05, 0.05, 3) * np.array(shape)
    body = _ellipsoid(grid, c, np.array(shape) * rng.uniform(0.38, 0.46, 3), rng, 0.03)
    label = np.zeros(shape, np.uint8)
    organs = [  # (relative radius, offset, intensity HU)
        (0.22, (0.0, -0.12, -0.1), 160.0),
        (0.12, (0.05, 0.15, 0.16), -60.0),
        (0.09, (-0.1, 0.0, 0.15), 250.0),
    ]
    for lab in range(1, n_labels + 1):
        rel, off, _ = organs[(lab - 1) % len(organs)]
        center = c + np.array(off) * np.array(shape) + rng.uniform(-0.03, 0.03, 3) * np.array(shape)
        radii = np.maximum(np.array(shape) * rel * rng.uniform(0.85, 1.15, 3), 1.5)
        label[_ellipsoid(grid, center, radii, rng, 0.12) & body & (label == 0)] = lab
    images = []
    for ch in range(n_channels):
        if ct:
            img = np.where(body, 40.0, -1000.0).astype(np.float32)
            for lab in range(1, n_labels + 1):
                img[label == lab] = organs[(lab - 1) % len(organs)][2] * (1 + 0.3 * ch)
            img += rng.normal(0, 20, shape).astype(np.float32) * body
        else:  # MRI-like: arbitrary positive scale, zero outside the body
            scale = rng.uniform(50, 500)
            img = np.where(body, 1.0, 0.0).astype(np.float32) * scale
            for lab in range(1, n_labels + 1):
                img[label == lab] = scale * (1.5 + 0.7 * lab + 0.2 * ch)
            img = (img + rng.normal(0, 0.1 * scale, shape).astype(np.float32) * body).clip(0, None)
        images.append(img)
    return np.stack(images).astype(np.float32), label


def oblique_direction(angle: float = 0.35) -> tuple[float, ...]:
    c, s = math.cos(angle), math.sin(angle)
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


def make_synthetic_dataset(
    raw_root: str | Path,
    dataset_id: int = 999,
    name: str = "Synthetic",
    n_cases: int = 6,
    shape: tuple[int, int, int] = (16, 24, 24),
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.8),
    n_labels: int = 2,
    n_channels: int = 1,
    ct: bool = True,
    file_ending: str = ".nii.gz",
    oblique_every: int = 3,
    n_test: int = 0,
    seed: int = 0,
    test_labels_dir: str | Path | None = None,
) -> Path:
    """Write a dataset folder `raw_root/DatasetXXX_name` and return its path. Same arguments, same bytes.

    Held-out cases (`n_test`) go to imagesTs; their labels go to `test_labels_dir` when given (outside the
    dataset folder, since nnU-Net's layout has no place for them).
    """
    rng = np.random.default_rng(seed)
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    two_d = file_ending in (".png", ".bmp")
    for sub in ("imagesTr", "labelsTr") + (("imagesTs",) if n_test else ()):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_cases + n_test):
        jitter = rng.uniform(0.9, 1.1, 3)
        shp = tuple(int(round(s * rng.uniform(0.9, 1.1))) for s in shape)
        if two_d:
            shp = (1, *shp[1:])
        img, lab = synthetic_case(shp, rng, n_labels, n_channels, ct and not two_d)
        if two_d:
            geo = Geometry.identity((1.0, 1.0), dim=2)
            lo, hi = img.min(), img.max()
            img = ((img - lo) / max(hi - lo, 1e-6) * 255).round().astype(np.uint8)
        else:
            sp = tuple(float(round(s * j, 4)) for s, j in zip(spacing, jitter))
            direction = oblique_direction() if oblique_every and i % oblique_every == oblique_every - 1 else None
            geo = Geometry(sp, (float(-10 * i), 5.0, -3.5), direction or tuple(np.eye(3).ravel().tolist()))
        cid = f"case_{i:03d}"
        test = i >= n_cases
        img_dir = folder / ("imagesTs" if test else "imagesTr")
        for ch in range(n_channels):
            write_image(img_dir / f"{cid}_{ch:04d}{file_ending}", img[ch], geo)
        if not test:
            write_label(folder / "labelsTr" / f"{cid}{file_ending}", lab, geo)
        elif test_labels_dir is not None:
            write_label(Path(test_labels_dir) / f"{cid}{file_ending}", lab, geo)
    meta = {
        "channel_names": {str(c): ("CT" if ct and not two_d else f"MRI{c}") for c in range(n_channels)},
        "labels": {"background": 0, **{f"organ{lab}": lab for lab in range(1, n_labels + 1)}},
        "numTraining": n_cases,
        "file_ending": file_ending,
        "name": name,
        "description": "synthetic dataset generated by autoseg (deterministic)",
    }
    atomic_write_text(folder / "dataset.json", json.dumps(meta, indent=2) + "\n")  # written last: marks it complete
    return folder
