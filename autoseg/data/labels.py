"""What the labels of a dataset mean: plain classes (softmax, argmax) or overlapping regions (sigmoid per region),
and the optional ignore label. The one switch every later stage reads.

dataset.json's ``labels`` maps a name to an integer, or (region training, as in nnU-Net v2) to a list of integers:
``{"background": 0, "whole": [1, 2], "posterior": 2}``. A dataset has regions when any value is a list of two or more
integers; it then needs ``regions_class_order``, one label value per foreground region, which says how the sigmoid
outputs become a label map: every region whose probability exceeds 0.5 writes its value, in that order, so a later
region overwrites an earlier one (nested regions are listed from the outside in). The label named ``ignore`` (an
integer, the highest value) marks voxels whose class is unknown: they take no part in the loss, the Dice scores or
the sampler's foreground locations, and the network has no output for them.

- classes (`LabelScheme.classes`): what the network predicts and what is scored: the foreground label values
  (softmax: one output per value 0..K-1, background included), or the foreground regions (sigmoid: one output each,
  no background output). A class is an int or a tuple of label values (a region).
- `LabelScheme.to_labels`: probabilities (K, *spatial) -> label map (argmax, or regions through
  regions_class_order).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from autoseg.errors import DatasetError

IGNORE_NAME = "ignore"
REGION_THRESHOLD = 0.5
Class = int | tuple[int, ...]


@dataclass(frozen=True)
class LabelScheme:
    """dataset.json's labels, parsed: names and their label values in file order, plus regions_class_order."""

    names: tuple[str, ...]
    values: tuple[tuple[int, ...], ...]  # per name: one value, or the values of a region
    regions_class_order: tuple[int, ...] | None = None

    @property
    def has_regions(self) -> bool:
        return any(len(v) > 1 for v in self.values)

    @property
    def activation(self) -> str:
        """ "sigmoid" (one independent probability per region) or "softmax" (one distribution over the classes)."""
        return "sigmoid" if self.has_regions else "softmax"

    @property
    def ignore_label(self) -> int | None:
        for name, v in zip(self.names, self.values):
            if name == IGNORE_NAME:
                return v[0]
        return None

    @property
    def file_values(self) -> tuple[int, ...]:
        """Every value a label file may hold (background and the ignore label included)."""
        return tuple(sorted({x for v in self.values for x in v}))

    @property
    def foreground_labels(self) -> tuple[int, ...]:
        """Label values other than background and ignore."""
        return tuple(x for x in self.file_values if x != 0 and x != self.ignore_label)

    @property
    def regions(self) -> tuple[tuple[int, ...], ...]:
        """Foreground regions in dataset.json order (background and ignore left out); empty without regions."""
        if not self.has_regions:
            return ()
        return tuple(v for n, v in zip(self.names, self.values) if n != IGNORE_NAME and v != (0,))

    @property
    def classes(self) -> tuple[Class, ...]:
        """What is predicted and scored: the foreground regions, else the foreground label values."""
        return self.regions if self.has_regions else self.foreground_labels

    @property
    def num_outputs(self) -> int:
        """Network output channels: one per region, else one per label value 0..K-1 (the ignore label has none)."""
        return len(self.regions) if self.has_regions else max(self.foreground_labels, default=0) + 1

    def class_name(self, cls: Class) -> str:
        key = tuple(cls) if isinstance(cls, (tuple, list)) else (int(cls),)
        for name, v in zip(self.names, self.values):
            if v == key and name != IGNORE_NAME:
                return name
        return class_key(cls)

    def written_names(self) -> dict[int, str]:
        """Label value written in a predicted label map -> name (regions: their regions_class_order values)."""
        if self.has_regions:
            return {int(v): self.class_name(r) for v, r in zip(self.regions_class_order or (), self.regions)}
        return {v: self.class_name(v) for v in self.foreground_labels}

    def to_labels(self, probs: np.ndarray) -> np.ndarray:
        """Probabilities (K, *spatial) -> label map: argmax (ties to the lower label), or for regions every region
        above 0.5 writes its regions_class_order value in turn (later ones overwrite earlier ones)."""
        probs = np.asarray(probs)
        if not self.has_regions:
            return argmax_labels(probs)
        order = self.regions_class_order or ()
        if probs.shape[0] != len(order):
            raise ValueError(f"{probs.shape[0]} region probabilities, regions_class_order has {len(order)} entries")
        out = np.zeros(probs.shape[1:], dtype=np.uint8 if max(order, default=0) < 256 else np.uint16)
        for channel, value in enumerate(order):
            out[probs[channel] > REGION_THRESHOLD] = value
        return out


def argmax_labels(probs: np.ndarray) -> np.ndarray:
    """Argmax over the class axis as uint8 (uint16 above 256 classes); ties go to the lower label."""
    return np.argmax(probs, axis=0).astype(np.uint8 if probs.shape[0] <= 256 else np.uint16)


def class_key(cls: Class) -> str:
    """ "2" for a label, "1,2" for a region (the key of metrics tables and postprocessing)."""
    return str(int(cls)) if not isinstance(cls, (tuple, list)) else ",".join(str(int(v)) for v in cls)


def class_mask(seg: np.ndarray, cls: Class) -> np.ndarray:
    """Voxels of `seg` belonging to a label value or to a region (any of its values)."""
    return np.isin(seg, cls) if isinstance(cls, (tuple, list)) else np.asarray(seg) == int(cls)


def _as_values(value) -> tuple[int, ...] | None:
    """An int or a non-empty list of ints -> tuple; anything else (bools, floats, strings, nesting) -> None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    if isinstance(value, (list, tuple)) and value and all(is_int(v) for v in value):
        return tuple(int(v) for v in value)
    return None


def parse_labels(labels, regions_class_order=None, where: str = "dataset.json") -> tuple[LabelScheme | None, list[str]]:
    """dataset.json's ``labels`` (and ``regions_class_order``) -> (scheme or None, every problem, each naming
    `where`)."""
    if not isinstance(labels, Mapping) or not labels:
        return None, [f'{where}: "labels" must be a non-empty object like {{"background": 0, "organ": 1}}']
    parsed = {name: _as_values(v) for name, v in labels.items()}
    bad = {k: labels[k] for k, v in parsed.items() if v is None}
    if bad:
        return None, [f'{where}: "labels" values must be integers or (regions) non-empty lists of integers; bad: {bad}']
    scheme = LabelScheme(tuple(parsed), tuple(parsed.values()), None)
    problems = _value_problems(scheme, where)
    order = None
    if scheme.has_regions:
        order, found = _order_problems(scheme, regions_class_order, where)
        problems += found
    if problems:
        return None, problems
    return LabelScheme(scheme.names, scheme.values, order), []


def _value_problems(scheme: LabelScheme, where: str) -> list[str]:
    problems = []
    ignore = scheme.ignore_label
    if IGNORE_NAME in scheme.names and len(scheme.values[scheme.names.index(IGNORE_NAME)]) != 1:
        problems.append(f'{where}: the "ignore" label must be one integer, found a region')
        ignore = None
    values = sorted({x for v in scheme.values for x in v} - ({ignore} if ignore is not None else set()))
    if not values or values[0] != 0 or (0,) not in scheme.values:
        problems.append(f'{where}: "labels" must contain background = 0, found values {scheme.file_values}')
    elif values != list(range(len(values))):
        problems.append(f"{where}: label values must be consecutive from 0 (0, 1, 2, ...), found {values}")
    if ignore is not None and values and ignore != values[-1] + 1:
        problems.append(
            f'{where}: the "ignore" label must be the highest value, one above the others ({values[-1] + 1}), '
            f"found {ignore}"
        )
    singles = [v for v in scheme.values if len(v) == 1]
    if len(set(singles)) != len(singles):
        problems.append(f"{where}: two label names share one value: {dict(zip(scheme.names, scheme.values))}")
    for name, v in zip(scheme.names, scheme.values):
        if len(v) > 1 and (0 in v or (ignore is not None and ignore in v)):
            problems.append(f"{where}: region {name!r} {list(v)} must not contain background (0) or the ignore label")
    return problems


def _order_problems(scheme: LabelScheme, order, where: str) -> tuple[tuple[int, ...] | None, list[str]]:
    n = len(scheme.regions)
    example = "[" + ", ".join(str(r[-1]) for r in scheme.regions) + "]"
    if order is None:
        return None, [
            f'{where}: "regions_class_order" is missing; a dataset with regions needs one label value per region '
            f"({n}), e.g. {example}"
        ]
    values = _as_values(order) if isinstance(order, (list, tuple)) else None
    if values is None or len(values) != n:
        return None, [
            f'{where}: "regions_class_order" must be a list of {n} integers (one per region, in the order of '
            f'"labels"), found {order!r}'
        ]
    allowed = set(scheme.foreground_labels)
    wrong = [v for v in values if v not in allowed]
    if wrong:
        return None, [f'{where}: "regions_class_order" holds {wrong}, which are not foreground label values']
    return values, []


def label_scheme(labels, regions_class_order=None, where: str = "dataset.json") -> LabelScheme:
    """`parse_labels` that raises DatasetError with every problem."""
    scheme, problems = parse_labels(labels, regions_class_order, where)
    if scheme is None:
        raise DatasetError("\n".join(problems))
    return scheme
