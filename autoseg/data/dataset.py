"""A raw dataset in nnU-Net v2's layout: dataset.json, imagesTr/CASE_XXXX.ext, labelsTr/CASE.ext, imagesTs/.

`parse_dataset_json` returns the spec and the list of problems (so `verify` can report them all at once);
`load_dataset` raises on the first problem; `list_cases` pairs channel files and labels by case id;
`num_training_problem` / `check_num_training` compare dataset.json's numTraining with the cases in imagesTr (one
message for verify, fingerprint and preprocess).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from autoseg.data.image_io import check_ending, file_ending, is_natural_2d
from autoseg.data.labels import LabelScheme, label_scheme, parse_labels
from autoseg.errors import DatasetError, ImageIOError
from autoseg.serialization import load_json

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


@dataclass(frozen=True)
class DatasetSpec:
    folder: Path
    name: str
    channel_names: tuple[str, ...]  # index = channel number (file suffix _0000, _0001, ...)
    labels: dict[str, int | list[int]]  # label name -> value (a list for a region), background included
    num_training: int
    file_ending: str
    regions_class_order: tuple[int, ...] | None = None  # datasets with regions (autoseg.data.labels)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def scheme(self) -> LabelScheme:
        """What the labels mean (classes or regions, ignore label): `autoseg.data.labels`."""
        return label_scheme(self.labels, self.regions_class_order, str(self.folder / "dataset.json"))

    @property
    def label_values(self) -> tuple[int, ...]:
        """Every value a label file may hold (background and the ignore label included)."""
        return self.scheme.file_values

    @property
    def foreground_labels(self) -> tuple[int, ...]:
        """Label values other than background and the ignore label."""
        return self.scheme.foreground_labels

    @property
    def label_names(self) -> dict[int, str]:
        return {v[0]: n for n, v in zip(self.scheme.names, self.scheme.values) if len(v) == 1}

    @property
    def rgb(self) -> bool:
        """One 3-channel file per case (RGB PNG/BMP/TIFF) instead of one file per channel."""
        return is_rgb(self.file_ending, self.channel_names)


def is_rgb(file_ending: str, channel_names: Sequence[str]) -> bool:
    """The RGB rule: a natural-image ending with channels named r, g, b (or red, green, blue) means one 3-channel
    file per case instead of one file per channel."""
    return is_natural_2d(file_ending) and [c.lower() for c in channel_names] in (
        ["r", "g", "b"],
        ["red", "green", "blue"],
    )


def files_per_case(file_ending: str, channel_names: Sequence[str]) -> int:
    """Image files of one case: 1 for an RGB dataset, else one per channel."""
    return 1 if is_rgb(file_ending, channel_names) else len(channel_names)


@dataclass(frozen=True)
class Case:
    case_id: str
    images: tuple[Path, ...]  # one file per channel (one RGB file for RGB datasets)
    label: Path | None


def parse_dataset_json(folder: str | Path) -> tuple[DatasetSpec | None, list[str]]:
    """Read `folder/dataset.json` -> (spec or None, problems). Each problem names the file and the defect."""
    folder = Path(folder)
    path = folder / "dataset.json"
    if not path.is_file():
        return None, [f"{path}: dataset.json is missing"]
    try:
        data = load_json(path)
    except ValueError as exc:
        return None, [str(exc)]
    if not isinstance(data, dict):
        return None, [f"{path}: must hold a JSON object, found {type(data).__name__}"]
    problems = [f"{path}: required key {k!r} is missing" for k in REQUIRED_KEYS if k not in data]
    if "channel_names" not in data and "modality" in data:  # nnU-Net v1 name
        problems = [p for p in problems if "channel_names" not in p]
        data = {**data, "channel_names": data["modality"]}
    if problems:
        return None, problems

    channels = data["channel_names"]
    if not isinstance(channels, dict) or not channels:
        problems.append(f'{path}: "channel_names" must be a non-empty object like {{"0": "CT"}}')
    elif sorted(channels, key=lambda k: int(k) if str(k).isdigit() else -1) != [str(i) for i in range(len(channels))]:
        problems.append(f'{path}: "channel_names" keys must be "0", "1", ... in order, found {list(channels)}')
    elif not all(isinstance(v, str) for v in channels.values()):
        problems.append(f'{path}: "channel_names" values must be strings')

    scheme, label_problems = parse_labels(data["labels"], data.get("regions_class_order"), str(path))
    problems += label_problems

    n = data["numTraining"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        problems.append(f'{path}: "numTraining" must be a positive integer, found {n!r} ({type(n).__name__})')

    ending = data["file_ending"]
    if not isinstance(ending, str) or not ending.startswith("."):
        problems.append(f'{path}: "file_ending" must be a string like ".nii.gz", found {ending!r}')
    else:
        try:
            check_ending(ending, f'{path}: "file_ending"')
        except ImageIOError as exc:
            problems.append(str(exc))

    if problems:
        return None, problems
    name = folder.name
    spec = DatasetSpec(
        folder=folder,
        name=name,
        channel_names=tuple(channels[str(i)] for i in range(len(channels))),
        labels=dict(data["labels"]),
        num_training=n,
        file_ending=ending,
        regions_class_order=scheme.regions_class_order,
    )
    return spec, []


def load_dataset(folder: str | Path) -> DatasetSpec:
    """Load dataset.json, raising DatasetError with every problem found in it."""
    spec, problems = parse_dataset_json(folder)
    if spec is None:
        raise DatasetError("\n".join(problems))
    return spec


def _channel_re(ending: str) -> re.Pattern[str]:
    return re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(ending) + "$")


def _naming_problem(path: Path, ending: str) -> str:
    if path.is_dir():
        return f"{path}: unexpected folder (only CASE_XXXX{ending} files belong here)"
    if not path.name.endswith(ending):
        return f"{path}: file ending {file_ending(path)!r} differs from dataset.json's file_ending {ending!r}"
    return f"{path}: file name does not follow CASE_XXXX{ending} (4-digit channel index)"


def image_case_ids(spec: DatasetSpec, images_dir: str = "imagesTr") -> list[str]:
    """Sorted ids of every case that has at least one correctly named channel file in `images_dir`."""
    folder = spec.folder / images_dir
    if not folder.is_dir():
        return []
    pattern = _channel_re(spec.file_ending)
    ids = {m.group("case") for p in folder.iterdir() if not p.name.startswith(".") and (m := pattern.match(p.name))}
    return sorted(ids)


def list_cases(
    spec: DatasetSpec, images_dir: str = "imagesTr", labels_dir: str | None = "labelsTr"
) -> tuple[list[Case], list[str]]:
    """Pair channel files with labels -> (cases sorted by id, problems: missing/extra/unmatched files)."""
    img_dir = spec.folder / images_dir
    problems: list[str] = []
    if not img_dir.is_dir():
        return [], [f"{img_dir}: folder is missing"]
    pattern = _channel_re(spec.file_ending)
    by_case: dict[str, dict[int, Path]] = {}
    for p in sorted(img_dir.iterdir()):
        if p.name.startswith("."):
            continue
        m = pattern.match(p.name)
        if not m:
            problems.append(_naming_problem(p, spec.file_ending))
            continue
        by_case.setdefault(m.group("case"), {})[int(m.group("ch"))] = p
    n_files = 1 if spec.rgb else spec.num_channels
    lab_dir = spec.folder / labels_dir if labels_dir else None
    labels: dict[str, Path] = {}
    if lab_dir is not None:
        if not lab_dir.is_dir():
            problems.append(f"{lab_dir}: folder is missing")
        else:
            for p in sorted(lab_dir.iterdir()):
                if p.name.startswith("."):
                    continue
                if not p.name.endswith(spec.file_ending):
                    problems.append(f"{p}: file ending differs from dataset.json's file_ending {spec.file_ending!r}")
                    continue
                labels[p.name[: -len(spec.file_ending)]] = p
    cases = []
    for cid in sorted(by_case):
        chans = by_case[cid]
        missing = [i for i in range(n_files) if i not in chans]
        extra = sorted(set(chans) - set(range(n_files)))
        for i in missing:
            problems.append(f"{img_dir / f'{cid}_{i:04d}{spec.file_ending}'}: channel file is missing (case {cid!r})")
        for i in extra:
            problems.append(f"{chans[i]}: channel {i} is not declared in dataset.json's channel_names")
        label = labels.get(cid)
        if lab_dir is not None and label is None and lab_dir.is_dir():
            problems.append(f"{lab_dir / (cid + spec.file_ending)}: label file is missing (case {cid!r})")
        if not missing:
            cases.append(Case(cid, tuple(chans[i] for i in range(n_files)), label))
    for cid in sorted(set(labels) - set(by_case)):
        problems.append(f"{labels[cid]}: label file has no matching image ({cid}_0000{spec.file_ending})")
    return cases, problems


def num_training_problem(spec: DatasetSpec, n_found: int | None = None) -> str | None:
    """The problem text when dataset.json's numTraining differs from the training cases found (None when equal).

    `n_found` defaults to the cases with at least one correctly named channel file in imagesTr.
    """
    if n_found is None:
        n_found = len(image_case_ids(spec))
    if n_found == spec.num_training:
        return None
    path, images = spec.folder / "dataset.json", spec.folder / "imagesTr"
    return (
        f"{path}: numTraining is {spec.num_training} but {n_found} cases were found in {images}; "
        f"fix numTraining in dataset.json (set it to {n_found} if these are all the training cases) and run "
        "`autoseg verify` to check the dataset"
    )


def check_num_training(spec: DatasetSpec, n_found: int | None = None) -> None:
    """Raise DatasetError (see `num_training_problem`) when numTraining differs from the cases found."""
    problem = num_training_problem(spec, n_found)
    if problem is not None:
        raise DatasetError(problem)
