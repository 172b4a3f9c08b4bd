"""The hostile-input corpus: tiny synthetic datasets, each with one defect (not a test module).

`CASES` holds (id, base, damage(folder), offending path relative to the dataset folder, regex of the defect words).
`WORKING` holds odd but valid datasets (id, base, change(folder)) that every command must accept.
tests/unit/data/test_verify.py runs most of `CASES` through `autoseg verify` too.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_file, write_image, write_label
from autoseg.data.synthetic import make_synthetic_dataset, oblique_direction

NAME = "Dataset999_Synthetic"
BASES = {
    "nii": dict(n_cases=3, shape=(8, 10, 12), ct=False),
    "nii2ch": dict(n_cases=3, shape=(8, 10, 12), n_channels=2, ct=False),
    "mha": dict(n_cases=3, shape=(8, 10, 12), file_ending=".mha", ct=False),
}
IMG, LAB = "imagesTr", "labelsTr"
C1, C1L = f"{IMG}/case_001_0000.nii.gz", f"{LAB}/case_001.nii.gz"
M1 = f"{IMG}/case_001_0000.mha"


def build(raw: Path, base: str) -> Path:
    return make_synthetic_dataset(raw, **BASES[base])


# ---- damage helpers --------------------------------------------------------------------------------------------
def edit_json(folder: Path, **changes) -> None:
    path = folder / "dataset.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def rewrite(path: Path, fn=None, geo_fn=None, new_path: Path | None = None, label: bool = False) -> None:
    arr, geo = read_file(path)
    arr = arr[0] if arr.shape[0] == 1 else arr
    arr = fn(arr) if fn else arr
    geo = geo_fn(geo) if geo_fn else geo
    if new_path is not None:
        path.unlink()
    (write_label if label else write_image)(new_path or path, arr, geo)


def with_value(value, dtype=np.uint8):
    def fn(arr):
        arr = arr.astype(dtype)
        arr.flat[arr.size // 2] = value
        return arr

    return fn


def scaled(geo: Geometry) -> Geometry:
    return Geometry(tuple(s * 1.5 for s in geo.spacing), geo.origin, geo.direction, geo.dim)


def moved(geo: Geometry) -> Geometry:
    return Geometry(geo.spacing, tuple(o + 7.0 for o in geo.origin), geo.direction, geo.dim)


def rotated(geo: Geometry) -> Geometry:
    return Geometry(geo.spacing, geo.origin, oblique_direction(0.8), geo.dim)


def patch_nifti(path: Path, offset: int, fmt: str, values) -> None:
    """Overwrite header fields of a .nii.gz file (little endian) and re-compress it."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    path.write_bytes(gzip.compress(bytes(raw)))


def nan_spacing_nii(path: Path) -> None:
    raw = gzip.decompress(path.read_bytes())
    pixdim = list(struct.unpack("<8f", raw[76:108]))
    pixdim[2] = float("nan")
    patch_nifti(path, 76, "<8f", pixdim)


def singular_sform_nii(path: Path) -> None:
    """qform off, sform on with two identical rows: a singular direction matrix."""
    patch_nifti(path, 252, "<2h", (0, 1))
    patch_nifti(path, 280, "<12f", (1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0))


def make_4d(path: Path) -> None:
    arr, geo = read_file(path)
    tmp = path.with_name("tmp.nii")
    write_image(tmp, np.concatenate([arr[0], arr[0]]), geo, compress=False)
    raw = bytearray(tmp.read_bytes())
    tmp.unlink()
    dims = list(struct.unpack("<8h", raw[40:56]))
    dims[0], dims[3], dims[4] = 4, arr.shape[1], 2
    raw[40:56] = struct.pack("<8h", *dims)
    path.write_bytes(gzip.compress(bytes(raw)))


def mha_header(path: Path, old: str, new: str) -> None:
    data = path.read_bytes()
    end = data.index(b"ElementDataFile")
    path.write_bytes(re.sub(old.encode(), new.encode(), data[:end]) + data[end:])


def nan_spacing_mha(path: Path) -> None:
    mha_header(path, r"ElementSpacing = \S+", "ElementSpacing = nan")


def singular_direction_mha(path: Path) -> None:
    """Two identical rows in the direction matrix."""
    mha_header(path, r"TransformMatrix = [^\n]+", "TransformMatrix = 1 0 0 1 0 0 0 0 1")


def symlink_loop(path: Path) -> None:
    path.unlink()
    os.symlink(path.name, path)  # points to itself


def to_2d(folder: Path) -> None:
    for path in (folder / C1, folder / C1L):
        arr, _ = read_file(path)
        write_image(path, arr[0, :1], Geometry.identity((0.8, 0.8), dim=2))


def truncate(path: Path, keep: int | None = None, drop: int = 0) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep is not None else data[:-drop])


def truncated_plain_nii(folder: Path) -> None:
    """Uncompressed .nii dataset whose first case's image lost its last 100 bytes."""
    for p in sorted(folder.rglob("*.nii.gz")):
        p.with_name(p.name[:-3]).write_bytes(gzip.decompress(p.read_bytes()))
        p.unlink()
    edit_json(folder, file_ending=".nii")
    truncate(folder / IMG / "case_001_0000.nii", drop=100)


def add_case(folder: Path, new: str) -> None:
    """A complete extra case (a copy of case_000) added without raising dataset.json's numTraining."""
    for p in sorted((folder / IMG).glob("case_000_*.nii.gz")):
        shutil.copy(p, p.with_name(new + p.name[len("case_000") :]))
    shutil.copy(folder / LAB / "case_000.nii.gz", folder / LAB / f"{new}.nii.gz")


# (id, base, damage, offending path, defect regex)
CASES = [
    ("json_missing", "nii", lambda f: (f / "dataset.json").unlink(), "dataset.json", r"dataset\.json is missing"),
    ("json_not_json", "nii", lambda f: (f / "dataset.json").write_text("{oops"), "dataset.json", r"not valid JSON"),
    ("json_not_object", "nii", lambda f: (f / "dataset.json").write_text("[1]"), "dataset.json", r"JSON object"),
    ("json_key_missing", "nii", lambda f: edit_json(f, labels=None), "dataset.json", r"'labels' is missing"),
    ("num_training_str", "nii", lambda f: edit_json(f, numTraining="3"), "dataset.json", r"numTraining.*integer"),
    ("labels_not_int", "nii", lambda f: edit_json(f, labels={"background": "0", "a": 1}), "dataset.json", "integer"),
    ("lossy_ending", "nii", lambda f: edit_json(f, file_ending=".jpg"), "dataset.json", r"lossy"),
    ("count_mismatch", "nii", lambda f: edit_json(f, numTraining=5), "dataset.json", r"numTraining is 5 but 3"),
    ("count_too_low", "nii", lambda f: edit_json(f, numTraining=2), "dataset.json", r"numTraining is 2 but 3"),
    ("count_case_added", "nii", lambda f: add_case(f, "case_009"), "dataset.json", r"numTraining is 3 but 4"),
    ("images_missing", "nii", lambda f: shutil.rmtree(f / IMG), IMG, r"folder is missing"),
    (
        "channel_missing",
        "nii2ch",
        lambda f: (f / IMG / "case_001_0001.nii.gz").unlink(),
        f"{IMG}/case_001_0001.nii.gz",
        r"channel file is missing",
    ),
    ("label_missing", "nii", lambda f: (f / C1L).unlink(), C1L, r"label file is missing"),
    (
        "label_unmatched",
        "nii",
        lambda f: shutil.copy(f / C1L, f / LAB / "case_009.nii.gz"),
        f"{LAB}/case_009.nii.gz",
        r"no matching image",
    ),
    (
        "mismatched_ending",
        "nii",
        lambda f: rewrite(f / C1, new_path=f / IMG / "case_001_0000.nrrd"),
        f"{IMG}/case_001_0000.nrrd",
        r"file ending '\.nrrd' differs",
    ),
    (
        "bad_file_name",
        "nii",
        lambda f: shutil.copy(f / C1, f / IMG / "notes 01.nii.gz"),
        f"{IMG}/notes 01.nii.gz",
        r"does not follow CASE_XXXX",
    ),
    ("zero_bytes_image", "nii", lambda f: (f / C1).write_bytes(b""), C1, r"empty \(0 bytes\)"),
    ("zero_bytes_label", "nii", lambda f: (f / C1L).write_bytes(b""), C1L, r"empty \(0 bytes\)"),
    ("truncated_gz_image", "nii", lambda f: truncate(f / C1, keep=600), C1, r"truncated"),
    ("truncated_gz_tail", "nii", lambda f: truncate(f / C1, drop=40), C1, r"truncated"),
    ("truncated_gz_label", "nii", lambda f: truncate(f / C1L, drop=30), C1L, r"truncated"),
    ("truncated_nii", "nii", truncated_plain_nii, f"{IMG}/case_001_0000.nii", r"truncated"),
    ("truncated_mha", "mha", lambda f: truncate(f / M1, drop=300), M1, r"corrupt or truncated"),
    ("garbage_label", "nii", lambda f: (f / C1L).write_bytes(b"not an image" * 50), C1L, r"corrupt"),
    ("symlink_loop", "nii", lambda f: symlink_loop(f / C1), C1, r"symbolic link or a link loop"),
    ("nan_spacing_nii", "nii", lambda f: nan_spacing_nii(f / C1), C1, r"spacing"),
    ("nan_spacing_mha", "mha", lambda f: nan_spacing_mha(f / M1), M1, r"spacing"),
    ("singular_direction_nii", "nii", lambda f: singular_sform_nii(f / C1), C1, r"corrupt"),
    ("singular_direction_mha", "mha", lambda f: singular_direction_mha(f / M1), M1, r"direction"),
    ("image_4d", "nii", lambda f: make_4d(f / C1), C1, r"is a 4D image"),
    ("nan_in_image", "nii", lambda f: rewrite(f / C1, with_value(np.nan, np.float32)), C1, r"1 NaN and 0 Inf"),
    ("inf_in_image", "nii", lambda f: rewrite(f / C1, with_value(np.inf, np.float32)), C1, r"0 NaN and 1 Inf"),
    ("nan_in_mha", "mha", lambda f: rewrite(f / M1, with_value(np.nan, np.float32)), M1, r"1 NaN and 0 Inf"),
    (
        "label_float_fraction",
        "nii",
        lambda f: rewrite(f / C1L, with_value(0.5, np.float32)),
        C1L,
        r"non-integer values \(e\.g\. 0\.5\)",
    ),
    ("label_undeclared", "nii", lambda f: rewrite(f / C1L, with_value(7), label=True), C1L, r"\[7\] are not declared"),
    ("label_negative", "nii", lambda f: rewrite(f / C1L, with_value(-1, np.int16)), C1L, r"\[-1\] are not declared"),
    ("shape_mismatch", "nii", lambda f: rewrite(f / C1L, lambda a: a[:, :-2], label=True), C1L, r"shape .* differs"),
    ("spacing_mismatch", "nii", lambda f: rewrite(f / C1L, geo_fn=scaled, label=True), C1L, r"spacing"),
    ("origin_mismatch", "nii", lambda f: rewrite(f / C1L, geo_fn=moved, label=True), C1L, r"origin"),
    ("direction_mismatch", "nii", lambda f: rewrite(f / C1L, geo_fn=rotated, label=True), C1L, r"direction"),
    (
        "channel_geometry_mismatch",
        "nii2ch",
        lambda f: rewrite(f / IMG / "case_001_0001.nii.gz", geo_fn=scaled),
        f"{IMG}/case_001_0001.nii.gz",
        r"geometry differs",
    ),
    ("mixed_2d_3d", "nii", to_2d, C1, r"is 2D while 2 other case\(s\) are 3D"),
]


def rename_case(folder: Path, old: str, new: str) -> None:
    ending = ".nii.gz"
    for p in list((folder / IMG).glob(f"{old}_*{ending}")):
        p.rename(p.with_name(new + p.name[len(old) :]))
    (folder / LAB / f"{old}{ending}").rename(folder / LAB / f"{new}{ending}")


def prefix_ids(folder: Path) -> None:
    """case ids 'case_001' and 'case_001_b' (a prefix of another) must stay separate cases."""
    rename_case(folder, "case_002", "case_001_b")


def reshape_all(folder: Path, shape) -> None:
    rng = np.random.default_rng(0)
    for p in sorted((folder / LAB).glob("*.nii.gz")):
        cid = p.name[: -len(".nii.gz")]
        lab = np.zeros(shape, np.uint8)
        sl = tuple(slice(s // 4, max(s // 4 + 1, 3 * s // 4)) for s in shape)
        lab[sl] = 1
        lab[tuple(slice(s // 3, s // 3 + 1) for s in shape)] = 2
        img = rng.normal(100, 10, shape).astype(np.float32) + 50 * lab
        geo = Geometry((2.0, 0.8, 0.8), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel().tolist()))
        write_image(folder / IMG / f"{cid}_0000.nii.gz", img, geo)
        write_label(p, lab, geo)


# (id, base, change): odd but valid inputs that must work
WORKING = [
    ("non_ascii_and_spaces", "nii", lambda f: rename_case(f, "case_001", "pätient ü 1")),
    ("id_prefix_of_another", "nii", prefix_ids),
    ("one_voxel_thick", "nii", lambda f: reshape_all(f, (1, 24, 20))),
    ("image_1000x1000x1", "nii", lambda f: reshape_all(f, (1, 1000, 1000))),
]
