"""Cross-validation splits: ``splits.json`` (list of {"train": [...], "val": [...]}) in the preprocessed folder.

Created when missing with the same assignment as nnU-Net (scikit-learn's KFold(5, shuffle=True, random_state=12345)
over the sorted case ids, re-implemented with numpy). A user-written file is respected (any number of folds) after
checking it against the case list. ``group_by`` keeps all cases of one group (patient) in the same fold: either a
regular expression with one capture group applied to the case id, or a CSV file with columns ``case,group``.
Fold ``"all"`` trains and validates on every case.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autoseg.errors import ConfigError
from autoseg.log import logger
from autoseg.serialization import load_json, save_json

Split = dict[str, list[str]]


def kfold_indices(n: int, n_folds: int = 5, seed: int = 12345) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, val) index arrays equal to sklearn KFold(n_folds, shuffle=True, random_state=seed).split(range(n))."""
    if n < n_folds:
        raise ConfigError(f"{n} cases (or groups) cannot be split into {n_folds} folds; write splits.json yourself")
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_folds, n // n_folds, dtype=int)
    sizes[: n % n_folds] += 1
    out, start = [], 0
    for size in sizes:
        val = np.sort(order[start : start + size])
        mask = np.ones(n, dtype=bool)
        mask[val] = False
        out.append((np.flatnonzero(mask), val))
        start += size
    return out


def make_splits(
    case_ids: Sequence[str], n_folds: int = 5, seed: int = 12345, groups: dict[str, str] | None = None
) -> list[Split]:
    """Seeded k-fold splits over the sorted case ids (over the sorted groups when `groups` is given)."""
    cases = sorted(case_ids)
    if groups is None:
        keys = np.array(cases)
        return [
            {"train": keys[t].tolist(), "val": keys[v].tolist()} for t, v in kfold_indices(len(cases), n_folds, seed)
        ]
    names = sorted(set(groups[c] for c in cases))
    splits = []
    for _, val_idx in kfold_indices(len(names), n_folds, seed):
        val_groups = {names[i] for i in val_idx}
        splits.append(
            {
                "train": [c for c in cases if groups[c] not in val_groups],
                "val": [c for c in cases if groups[c] in val_groups],
            }
        )
    return splits


def parse_groups(spec: str, case_ids: Sequence[str]) -> dict[str, str]:
    """case id -> group from a CSV file (columns case,group) or a regex with one capture group."""
    path = Path(spec)
    if spec.lower().endswith(".csv") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"--group-by {spec}: file not found")
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or not {"case", "group"} <= set(rows[0]):
            raise ConfigError(f"{path}: --group-by CSV needs the columns 'case' and 'group'")
        table = {r["case"].strip(): r["group"].strip() for r in rows}
        missing = [c for c in case_ids if c not in table]
        if missing:
            raise ConfigError(f"{path}: no group for {len(missing)} case(s), e.g. {', '.join(missing[:3])}")
        return {c: table[c] for c in case_ids}
    try:
        pattern = re.compile(spec)
    except re.error as exc:
        raise ConfigError(f"--group-by {spec!r} is neither a CSV file nor a valid regular expression ({exc})") from exc
    if pattern.groups != 1:
        raise ConfigError(f"--group-by {spec!r}: the regular expression needs exactly one (capture group)")
    out = {}
    for c in case_ids:
        m = pattern.search(c)
        if not m:
            raise ConfigError(f"--group-by {spec!r} does not match case id {c!r}")
        out[c] = m.group(1)
    return out


def validate_splits(splits: object, case_ids: Sequence[str], path: Path) -> list[Split]:
    """Check a splits file against the case list; every problem names the file and the fold."""
    if not isinstance(splits, list) or not splits:
        raise ConfigError(f"{path}: must hold a non-empty list of {{'train': [...], 'val': [...]}} objects")
    known = set(case_ids)
    for k, fold in enumerate(splits):
        if not isinstance(fold, dict) or set(fold) != {"train", "val"}:
            raise ConfigError(f"{path}: fold {k} must be an object with exactly the keys 'train' and 'val'")
        for key in ("train", "val"):
            ids = fold[key]
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                raise ConfigError(f"{path}: fold {k} {key!r} must be a non-empty list of case ids")
            unknown = sorted(set(ids) - known)
            if unknown:
                raise ConfigError(
                    f"{path}: fold {k} {key!r} names {len(unknown)} case(s) that are not in the preprocessed "
                    f"data, e.g. {', '.join(unknown[:3])}"
                )
        both = sorted(set(fold["train"]) & set(fold["val"]))
        if both:
            raise ConfigError(f"{path}: fold {k}: case(s) in both train and val, e.g. {', '.join(both[:3])}")
    return splits


def _check_grouping(splits: list[Split], groups: dict[str, str], path: Path) -> None:
    for k, fold in enumerate(splits):
        val_groups = {groups[c] for c in fold["val"] if c in groups}
        leaked = [c for c in fold["train"] if groups.get(c) in val_groups]
        if leaked:
            raise ConfigError(
                f"{path}: fold {k} puts case {leaked[0]!r} in train although its group {groups[leaked[0]]!r} is in "
                "val; delete the file to re-create it with --group-by"
            )


def load_or_create_splits(
    path: str | Path, case_ids: Sequence[str], group_by: str | None = None, write: bool = True
) -> list[Split]:
    """Read `path` (validated) or create it (saved when `write`); `group_by` as in `parse_groups`."""
    path = Path(path)
    groups = parse_groups(group_by, case_ids) if group_by else None
    if path.is_file():
        try:
            data = load_json(path)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        splits = validate_splits(data, case_ids, path)
        if groups:
            _check_grouping(splits, groups, path)
        return splits
    splits = make_splits(case_ids, groups=groups)
    if not write:
        return splits
    save_json(path, splits)
    logger.info(f"created {len(splits)}-fold splits in {path}")
    return splits


def fold_cases(splits: list[Split], fold: int | str, case_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """(train ids, val ids) of `fold`; 'all' -> every case for both."""
    if fold == "all":
        return sorted(case_ids), sorted(case_ids)
    if not isinstance(fold, int) or not 0 <= fold < len(splits):
        raise ConfigError(f"fold {fold!r} does not exist: splits.json has {len(splits)} folds (0..{len(splits) - 1})")
    return list(splits[fold]["train"]), list(splits[fold]["val"])
