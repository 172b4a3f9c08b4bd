"""On-disk format of one preprocessed case, shared by preprocessing (writer) and training/inference (readers).

Per case in ``preprocessed/<dataset>/<data_identifier>/``:

    <case>.npy         image, float32 (C, Z, Y, X) in the plans' transposed axis order; read with mmap
    <case>_seg.npy     labels, int8 (int16 above 127) (1, Z, Y, X); -1 marks voxels outside the nonzero crop mask
    <case>_locs.npy    foreground voxel coordinates for oversampling, int32 (N, 4): label, z, y, x (rows grouped
                       by label); a plain .npy (not .npz) so that the same case always gives the same bytes
    <case>.json        CaseProperties (everything needed to undo the preprocessing at export)

The .json is written last, so its presence marks a complete case (resumable preprocessing). Plain ``.npy`` opened
with ``mmap_mode='r'`` reads a random patch without decompressing the whole case (see docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoseg.data.geometry import Geometry
from autoseg.serialization import atomic_write, dumps, from_json, load_json


@dataclass(frozen=True)
class CaseProperties:
    case_id: str
    geometry: Geometry  # of the raw image, for writing predictions back
    shape_before_crop: tuple[int, ...]  # raw (z, y, x), not transposed
    bbox: tuple[tuple[int, int], ...]  # crop box in raw (z, y, x) order: [lo, hi) per axis
    shape_after_crop: tuple[int, ...]  # transposed
    spacing: tuple[float, ...]  # original spacing, transposed
    target_spacing: tuple[float, ...]  # transposed; for 2d configurations the first value is the original one
    shape_after_resample: tuple[int, ...]  # transposed
    transpose: tuple[int, ...]
    foreground_labels: tuple[int, ...] = ()  # labels present in this case


@dataclass
class PreprocessedCase:
    data: np.ndarray  # (C, Z, Y, X) float32, possibly a read-only memmap
    seg: np.ndarray | None  # (1, Z, Y, X) int8/int16, possibly memmap
    properties: CaseProperties
    class_locations: dict[int, np.ndarray]  # label -> (N, 3) int32 voxel coordinates


def _save_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, np.ascontiguousarray(arr), allow_pickle=False), fsync=False)


def _pack_locations(locations: dict[int, np.ndarray]) -> np.ndarray:
    rows = [np.zeros((0, 4), dtype=np.int32)]
    for label in sorted(locations):
        coords = np.asarray(locations[label], dtype=np.int32).reshape(-1, 3)
        rows.append(np.concatenate([np.full((len(coords), 1), label, dtype=np.int32), coords], axis=1))
    return np.concatenate(rows, axis=0)


def _unpack_locations(packed: np.ndarray) -> dict[int, np.ndarray]:
    labels = packed[:, 0]
    return {int(v): np.ascontiguousarray(packed[labels == v, 1:]) for v in np.unique(labels)}


def save_case(folder: str | Path, case: PreprocessedCase) -> None:
    """Write all files of a case atomically; the properties .json goes last (completion marker)."""
    folder = Path(folder)
    cid = case.properties.case_id
    _save_npy(folder / f"{cid}.npy", case.data.astype(np.float32, copy=False))
    if case.seg is not None:
        seg = case.seg
        dtype = np.int8 if seg.max(initial=0) <= 127 else np.int16
        _save_npy(folder / f"{cid}_seg.npy", seg.astype(dtype, copy=False))
    _save_npy(folder / f"{cid}_locs.npy", _pack_locations(case.class_locations))
    text = dumps(case.properties).encode("utf-8")
    atomic_write(folder / f"{cid}.json", lambda fh: fh.write(text), fsync=False)


def is_complete(folder: str | Path, case_id: str) -> bool:
    return (Path(folder) / f"{case_id}.json").is_file()


def load_properties(folder: str | Path, case_id: str) -> CaseProperties:
    return from_json(CaseProperties, load_json(Path(folder) / f"{case_id}.json"))


def load_case(folder: str | Path, case_id: str, mmap: bool = True, with_locations: bool = True) -> PreprocessedCase:
    """Open a case; arrays are read-only memmaps when `mmap` (no data is read until sliced)."""
    folder = Path(folder)
    mode = "r" if mmap else None
    data = np.load(folder / f"{case_id}.npy", mmap_mode=mode, allow_pickle=False)
    seg_path = folder / f"{case_id}_seg.npy"
    seg = np.load(seg_path, mmap_mode=mode, allow_pickle=False) if seg_path.is_file() else None
    locs: dict[int, np.ndarray] = {}
    if with_locations and (folder / f"{case_id}_locs.npy").is_file():
        locs = _unpack_locations(np.load(folder / f"{case_id}_locs.npy", allow_pickle=False))
    return PreprocessedCase(data, seg, load_properties(folder, case_id), locs)


def list_cases(folder: str | Path) -> list[str]:
    """Ids of the complete cases in a preprocessed configuration folder, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith("."))
