"""On-disk format of one preprocessed case, shared by preprocessing (writer) and training/inference (readers).

Per case in ``preprocessed/<dataset>/<data_identifier>/``:

    <case>.npy         image, float32 (C, Z, Y, X) in the plans' transposed axis order; read with mmap
    <case>_seg.npy     labels, int8 (int16 above 127) (1, Z, Y, X); -1 marks voxels outside the nonzero crop mask
    <case>_locs.npz    foreground voxel coordinates per label (key "label_<v>", int32 (N, 3)) for oversampling
    <case>.json        CaseProperties (everything needed to undo the preprocessing at export)

The .json is written last, so its presence marks a complete case (resumable preprocessing). Plain ``.npy`` opened
with ``mmap_mode='r'`` reads a random patch without decompressing the whole case (see docs/benchmarks.md).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoseg.data.geometry import Geometry
from autoseg.serialization import atomic_write_bytes, from_json, load_json, save_json


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


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def save_case(folder: str | Path, case: PreprocessedCase) -> None:
    """Write all files of a case atomically; the properties .json goes last (completion marker)."""
    folder = Path(folder)
    cid = case.properties.case_id
    atomic_write_bytes(folder / f"{cid}.npy", _npy_bytes(case.data.astype(np.float32, copy=False)))
    if case.seg is not None:
        seg = case.seg
        dtype = np.int8 if seg.max(initial=0) <= 127 else np.int16
        atomic_write_bytes(folder / f"{cid}_seg.npy", _npy_bytes(seg.astype(dtype, copy=False)))
    buf = io.BytesIO()
    locs = {f"label_{k}": np.asarray(v, dtype=np.int32).reshape(-1, 3) for k, v in case.class_locations.items()}
    np.savez(buf, **locs)
    atomic_write_bytes(folder / f"{cid}_locs.npz", buf.getvalue())
    save_json(folder / f"{cid}.json", case.properties)


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
    if with_locations and (folder / f"{case_id}_locs.npz").is_file():
        with np.load(folder / f"{case_id}_locs.npz", allow_pickle=False) as z:
            locs = {int(k.split("_", 1)[1]): z[k] for k in z.files}
    return PreprocessedCase(data, seg, load_properties(folder, case_id), locs)


def list_cases(folder: str | Path) -> list[str]:
    """Ids of the complete cases in a preprocessed configuration folder, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith("."))
