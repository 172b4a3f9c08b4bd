"""Random patch sampling from preprocessed cases, with padding and nnU-Net's foreground oversampling.

Cases are drawn with replacement. Sample j of a batch of size B is forced to contain foreground iff
``j >= round(B * (1 - p))``; a forced patch is centred on a random stored location of a random label present in the
case (a case without foreground gives a random patch). `classes` narrows and groups what "foreground" means: each class
is a tuple of label values (a region, or one label) and a forced patch picks a present class, then a stored
location of any of its values; the ignore label is left out of the classes, so no patch is ever centred on it.
Crops reaching outside the case are padded: image 0, labels -1.
A configuration with 2 patch axes on 3D-stored data (C, Z, Y, X) samples one slice along axis 0 (a forced patch takes
the slice of the chosen foreground voxel).
"""

from __future__ import annotations

import resource
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autoseg.errors import DatasetError
from autoseg.preprocessing import storage


def forced_foreground(batch_size: int, probability: float) -> list[bool]:
    """Which samples of a batch are forced to foreground: j >= round(B * (1 - p)) (B=2, p=0.33 -> [False, True])."""
    first = round(batch_size * (1 - probability))
    return [j >= first for j in range(batch_size)]


def lower_corner(
    shape: Sequence[int],
    size: Sequence[int],
    rng: np.random.Generator,
    center: Sequence[int] | None = None,
    margin: Sequence[int] | None = None,
) -> np.ndarray:
    """Lower corner of a crop of `size` in an array of `shape` (may be negative: padding splits evenly).

    Random within the allowed range, or placed so that `center` is the crop's middle voxel, clipped to that range.
    `margin` (crop size - final patch size) may always be padded, so that the final patch, cut from the middle of
    the crop after spatial augmentation, reaches every voxel up to the case border.
    """
    shape, size = np.asarray(shape, dtype=np.int64), np.asarray(size, dtype=np.int64)
    need = np.maximum(size - shape, 0 if margin is None else np.asarray(margin, dtype=np.int64))
    lo = -(need // 2)
    hi = shape + need // 2 + need % 2 - size
    if center is None:
        return rng.integers(lo, hi + 1)
    return np.clip(np.asarray(center, dtype=np.int64) - size // 2, lo, hi)


def crop_padded(arr: np.ndarray, corner: Sequence[int], size: Sequence[int], pad_value, out: np.ndarray) -> None:
    """Write arr[:, corner : corner + size] into `out` (C, *size); voxels outside `arr` get `pad_value`."""
    src, dst = [slice(None)], [slice(None)]
    for lo, n, dim in zip(corner, size, arr.shape[1:]):
        a, b = max(int(lo), 0), min(int(lo) + int(n), dim)
        src.append(slice(a, max(a, b)))
        dst.append(slice(a - int(lo), a - int(lo) + max(b - a, 0)))
    if any(s.stop - s.start < n for s, n in zip(dst[1:], size)):
        out[...] = pad_value
    out[tuple(dst)] = arr[tuple(src)]


def default_max_open() -> int:
    """Open cases a reader may keep: an eighth of the soft file-descriptor limit, between 64 and 1024."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1024 if soft == resource.RLIM_INFINITY else max(64, min(1024, soft // 8))


class CaseReader:
    """Opens preprocessed cases (memory-mapped) and keeps the most recently used ones open; with `prev_stage` (a
    cascade's folder of previous-stage maps, `<case>.npy`) each case's map is opened and kept with it."""

    def __init__(
        self, folder: str | Path, case_ids: Sequence[str], max_open: int | None = None, prev_stage=None
    ) -> None:
        """`max_open`: cases kept open (default: as many as the file-descriptor limit comfortably allows, at most
        1024; each open case holds up to three memory maps). Opening a case costs milliseconds, so a cache that
        holds the whole training set keeps the loader's CPU time to the crops."""
        self.folder = Path(folder)
        self.case_ids = list(case_ids)
        self.max_open = default_max_open() if max_open is None else int(max_open)
        self.prev_stage = Path(prev_stage) if prev_stage is not None else None
        self._open: OrderedDict[str, tuple[storage.PreprocessedCase, np.ndarray | None]] = OrderedDict()

    def __getstate__(self) -> dict:  # memmaps are reopened in each worker process
        return {**self.__dict__, "_open": OrderedDict()}

    def get(self, case_id: str) -> storage.PreprocessedCase:
        return self.open(case_id)[0]

    def open(self, case_id: str) -> tuple[storage.PreprocessedCase, np.ndarray | None]:
        """(the case, its previous-stage map or None)."""
        entry = self._open.pop(case_id, None)
        if entry is None:
            case = storage.load_case(self.folder, case_id, mmap=True)
            if case.seg is None:
                raise DatasetError(f"{self.folder / (case_id + '_seg.npy')}: missing; training needs labels")
            entry = (case, self._prev_map(case_id, case.seg.shape[1:]) if self.prev_stage is not None else None)
            while len(self._open) >= self.max_open:
                self._open.popitem(last=False)
        self._open[case_id] = entry
        return entry

    def _prev_map(self, case_id: str, shape: Sequence[int]) -> np.ndarray:
        path = self.prev_stage / f"{case_id}.npy"
        try:
            arr = np.load(path, mmap_mode="r")
        except FileNotFoundError as exc:
            need = "the cascade needs the previous stage's map of every case"
            raise DatasetError(f"{path}: missing; {need}") from exc
        if arr.shape != tuple(shape):
            raise DatasetError(f"{path}: shape {arr.shape}, the case's seg has {tuple(shape)}")
        return arr


def check_cases(folder: str | Path, case_ids: Sequence[str]) -> None:
    """Raise DatasetError naming the folder if a case is not completely preprocessed."""
    missing = [c for c in case_ids if not storage.is_complete(folder, c)]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DatasetError(
            f"{folder}: {len(missing)} case(s) are not preprocessed ({shown}); run `autoseg preprocess` first"
        )
    if not case_ids:
        raise DatasetError(f"{folder}: no cases to sample from")


class PatchSampler:
    """Draws batches of crops of `size` (2 or 3 axes) from the cases in a preprocessed configuration folder."""

    def __init__(
        self,
        folder: str | Path,
        case_ids: Sequence[str],
        size: Sequence[int],
        oversample: float,
        patch_size: Sequence[int] | None = None,
        prev_stage: str | Path | None = None,
        classes: Sequence[Sequence[int]] | None = None,
    ):
        """`size`: the crop; `patch_size`: the final patch cut from its middle later (default: `size`);
        `prev_stage`: a cascade's folder of previous-stage maps (`<case>.npy`), cropped as a second seg channel;
        `classes`: label-value groups to oversample (default: every stored label > 0 on its own)."""
        self.reader = CaseReader(folder, case_ids, prev_stage=prev_stage)
        self.classes = None if classes is None else tuple(tuple(int(v) for v in c) for c in classes)
        self.size = tuple(int(s) for s in size)
        self.margin = tuple(a - int(b) for a, b in zip(self.size, patch_size or size))
        self.oversample = float(oversample)

    def sample(self, rng: np.random.Generator, batch_size: int, empty=np.empty) -> tuple[np.ndarray, np.ndarray]:
        """-> data (B, C, *size) float32 and seg (B, 1, *size) int8, int16 above 127 labels (-1 = outside the case).

        With `prev_stage`, seg is (B, 2, *size): channel 1 is the previous stage's map at the same window (0 outside).
        `empty(shape, dtype)` gives the two output arrays (e.g. reused shared-memory buffers); every voxel is written.
        """
        data = seg = None
        n_seg = 1 if self.reader.prev_stage is None else 2
        for j, forced in enumerate(forced_foreground(batch_size, self.oversample)):
            case, prev = self.reader.open(self.reader.case_ids[rng.integers(len(self.reader.case_ids))])
            if data is None:
                data = empty((batch_size, case.data.shape[0], *self.size), np.float32)
                seg = empty((batch_size, n_seg, *self.size), self._seg_dtype(case))
            img, lab, corner, z = self._locate(case, forced, rng)
            crop_padded(img, corner, self.size, 0, data[j])
            crop_padded(lab, corner, self.size, -1, seg[j, :1])
            if prev is not None:
                crop_padded(prev[None] if z is None else prev[None, z], corner, self.size, 0, seg[j, 1:])
        return data, seg

    @staticmethod
    def _seg_dtype(case: storage.PreprocessedCase) -> np.dtype:
        """int8 as stored (labels <= 127, so a previous-stage map fits too), int16 where the stored labels need it."""
        return np.dtype(np.int8 if case.seg.dtype.itemsize == 1 else np.int16)

    def _locate(self, case: storage.PreprocessedCase, forced: bool, rng: np.random.Generator):
        """-> (image view, label view, lower corner, slice index or None) with views having len(size) spatial axes."""
        voxel = _foreground_voxel(case.class_locations, rng, self.classes) if forced else None
        img, lab, z = case.data, case.seg, None
        if len(self.size) == 2 and img.ndim == 4:
            z = int(voxel[0]) if voxel is not None else int(rng.integers(img.shape[1]))
            img, lab = img[:, z], lab[:, z]
            voxel = voxel[1:] if voxel is not None else None
        if img.ndim - 1 != len(self.size):
            raise DatasetError(
                f"{self.reader.folder}: case {case.properties.case_id} has shape {img.shape[1:]}, which does not "
                f"fit a {len(self.size)}d patch {self.size}"
            )
        return img, lab, lower_corner(img.shape[1:], self.size, rng, voxel, self.margin), z


def _foreground_voxel(
    locations: dict[int, np.ndarray], rng: np.random.Generator, classes: Sequence[tuple[int, ...]] | None = None
) -> np.ndarray | None:
    """A random stored voxel (z, y, x) of a random present foreground class (default: each label > 0), or None if
    the case has none. A class of several values (a region) draws from the union of their stored locations."""
    if classes is None:
        classes = [(k,) for k in sorted(locations) if k > 0]
    present = [c for c in classes if any(v in locations and len(locations[v]) for v in c)]
    if not present:
        return None
    chosen = present[rng.integers(len(present))]
    parts = [locations[v] for v in chosen if v in locations and len(locations[v])]
    locs = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return locs[rng.integers(len(locs))]
