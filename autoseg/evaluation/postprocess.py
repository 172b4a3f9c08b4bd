"""Postprocessing chosen on cross-validation: keep the largest connected component (jointly, then per label).

A postprocessing is an ordered tuple of steps; each step is a group of label values whose union is reduced to its
largest connected component (full connectivity: 26 neighbours in 3D, 8 in 2D; ties keep the component with the
lowest index), the removed voxels becoming background (0). Two kinds of steps are tried on the cross-validation
predictions of the selected model, as in nnU-Net:

1. all foreground labels jointly: accepted iff the mean foreground Dice improves and no single label's Dice gets
   worse;
2. then (only with more than one foreground label) each label on its own, on top of step 1 if it was accepted:
   accepted iff that label's Dice improves. A label's step changes only that label's voxels, so the per-label
   decisions are independent of each other.

Regions (datasets whose labels overlap, `autoseg.data.labels`): the classes are the regions; the joint step is the
union of their values and each region's own step is the group of its values (decided on the same base, as labels
are). Voxels of the ignore label in the reference are left out of every count.

Dice per case and label is 2TP / (2TP + FP + FN), NaN when both masks are empty; a label's Dice is the mean over
cases with NaN left out, the mean foreground Dice the mean of the labels' Dice (the same rules as
autoseg.evaluation.metrics). The whole decision reads every case once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from autoseg.data.labels import Class, class_key, class_mask

Step = tuple[int, ...]


@dataclass(frozen=True)
class Postprocessing:
    """Accepted steps (label groups) plus the cross-validation Dice that justified them (JSON via serialization)."""

    steps: tuple[Step, ...] = ()
    dice_before: dict[str, float | None] | None = None  # label -> mean CV Dice without postprocessing, + "mean"
    dice_after: dict[str, float | None] | None = None  # the same with the accepted steps (None: nothing to score)

    def describe(self) -> str:
        if not self.steps:
            return "none"
        return "; ".join("keep the largest component of labels " + "+".join(map(str, s)) for s in self.steps)


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest connected component of `mask` (full connectivity); empty stays empty."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    components, n = ndimage.label(mask, structure=structure)
    if n == 1:
        return mask.copy()
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def apply_step(labels: np.ndarray, step: Sequence[int]) -> np.ndarray:
    """`labels` with everything of the label group `step` outside its largest component set to 0 (a new array)."""
    out = np.array(labels, copy=True)
    group = np.isin(out, list(step))
    out[group & ~keep_largest_component(group)] = 0
    return out


def apply_postprocessing(labels: np.ndarray, steps: Iterable[Sequence[int]]) -> np.ndarray:
    """Apply the steps in order (cumulative); with no steps the input is returned unchanged (same object)."""
    for step in steps:
        labels = apply_step(labels, step)
    return labels


def _counts(pred: np.ndarray, ref: np.ndarray, cls: Class, valid: np.ndarray | None) -> tuple[int, int]:
    """(2TP, 2TP + FP + FN) of one class (label or region): the numerator and denominator of its Dice; voxels
    outside `valid` (the reference's ignore label) are not counted."""
    p, r = class_mask(pred, cls), class_mask(ref, cls)
    if valid is not None:
        p, r = p & valid, r & valid
    tp = int(np.count_nonzero(p & r))
    return 2 * tp, int(np.count_nonzero(p)) + int(np.count_nonzero(r))


def _mean_dice(pairs: list[tuple[int, int]]) -> float:
    values = [num / den for num, den in pairs if den > 0]
    return float(np.mean(values)) if values else math.nan


def _better(a: float, b: float) -> bool:
    """a > b, where NaN (nothing to score) is never better and never worse."""
    return not math.isnan(a) and (math.isnan(b) or a > b + 1e-12)


def _not_worse(a: float, b: float) -> bool:
    return math.isnan(b) or (not math.isnan(a) and a >= b - 1e-12)


def _fg_mean(per_label: dict[Class, float]) -> float:
    values = [v for v in per_label.values() if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def determine_postprocessing(
    cases: Iterable[tuple[np.ndarray, np.ndarray]], foreground_labels: Sequence[Class], ignore_label: int | None = None
) -> Postprocessing:
    """Decide the steps on (prediction, reference) label-map pairs (the merged cross-validation predictions).

    `foreground_labels`: the classes scored, label values or regions (tuples of values: a region's step is the group
    of its values); voxels where the reference holds `ignore_label` are not scored."""
    fg = [tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else int(v) for v in foreground_labels]
    steps_of = {v: (v if isinstance(v, tuple) else (v,)) for v in fg}
    joint = tuple(sorted({x for v in fg for x in steps_of[v]}))
    per_label = len(fg) > 1
    keys = ("base", "joint", *(f"base{v}" for v in fg), *(f"joint{v}" for v in fg)) if per_label else ("base", "joint")
    stats: dict[str, dict[Class, list[tuple[int, int]]]] = {k: {v: [] for v in fg} for k in keys}
    for pred, ref in cases:
        pred, ref = np.asarray(pred), np.asarray(ref)
        if pred.shape != ref.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
        valid = None if ignore_label is None else ref != ignore_label
        variants = {"base": pred, "joint": apply_step(pred, joint)}
        for key in ("base", "joint"):
            for v in fg:
                stats[key][v].append(_counts(variants[key], ref, v, valid))
                if per_label:
                    stats[f"{key}{v}"][v].append(_counts(apply_step(variants[key], steps_of[v]), ref, v, valid))
    dice = {k: {v: _mean_dice(s) for v, s in per.items() if s} for k, per in stats.items()}
    before, joint_after = dice["base"], dice["joint"]
    steps: list[Step] = []
    use_joint = _better(_fg_mean(joint_after), _fg_mean(before)) and all(
        _not_worse(joint_after[v], before[v]) for v in fg
    )
    base = "joint" if use_joint else "base"
    if use_joint:
        steps.append(joint)
    current = dict(dice[base])
    if per_label:
        for v in fg:
            if _better(dice[f"{base}{v}"][v], current[v]):
                steps.append(steps_of[v])
                current[v] = dice[f"{base}{v}"][v]

    def table(d: dict[Class, float]) -> dict[str, float | None]:
        out = {**{class_key(v): d[v] for v in fg}, "mean": _fg_mean(d)}
        return {k: None if math.isnan(x) else x for k, x in out.items()}

    return Postprocessing(tuple(steps), table(before), table(current))
