"""Segmentation losses: cross-entropy, soft Dice and their sum (nnU-Net's default), plus deep supervision.

All losses take logits (B, C, *spatial) and an int64 target (B, 1, *spatial) with values 0..C-1 (or `ignore_label`).
Soft Dice works on softmax probabilities, excludes the background class, uses smooth = 1e-5 in numerator and
denominator and returns MINUS the mean Dice, so "dice_ce" = CE - Dice is negative once training goes well.
`batch_dice=True` sums intersections and volumes over the batch and space (one Dice per class); False computes one
Dice per sample and class; either way the result is the mean over the entries. The target is never expanded to a
float one-hot: a bool class mask of the foreground classes selects the probabilities (softmax taken in float32, so
the sums stay accurate under CUDA autocast). Sums run over background-free slices only.

Regions (`autoseg.data.labels`): one sigmoid output per region; "dice_bce" = BCE - Dice, both per region (Dice over
every output: there is no background output), the int target turned into one bool mask per region inside the loss.
A dataset with regions trains with "dice_bce" when the config names "dice_ce" (the default).

The ignore label: its voxels are left out of every sum (CE by ``ignore_index``; BCE and Dice through a mask that
multiplies probabilities and per-voxel terms), so they contribute exactly nothing to the loss or its gradient; the
means divide by the valid voxels only.

Add your own loss with ``@losses.register("my_loss")`` on a builder ``(num_classes, batch_dice, ignore_label) ->
nn.Module`` and set ``--set loss=my_loss`` (a dataset with regions also passes ``regions=``, a tuple of label-value
tuples, so a region loss takes that keyword).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoseg.errors import ConfigError
from autoseg.registry import Registry

LossBuilder = Callable[[int, bool, "int | None"], nn.Module]
losses: Registry[LossBuilder] = Registry("loss")

DICE_SMOOTH = 1e-5


def soft_dice_stats(
    probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, first_class: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample and class >= first_class: (intersection, predicted volume, target volume), each (B, K) float.

    probs (B, C, *spatial) float; target (B, 1, *spatial) int64 in 0..C-1; valid optional bool (B, 1, *spatial).
    The target is compared against the class indices as a bool mask (1 byte per voxel and class, never float).
    """
    b, c = probs.shape[:2]
    probs = probs.reshape(b, c, -1)[:, first_class:]
    classes = torch.arange(first_class, c, device=probs.device).view(1, -1, 1)
    onehot = target.reshape(b, 1, -1) == classes
    if valid is not None:
        mask = valid.reshape(b, 1, -1)
        onehot = onehot & mask
        probs = probs * mask
    intersect = (probs * onehot).sum(-1)
    return intersect, probs.sum(-1), onehot.sum(-1, dtype=probs.dtype)


def mean_soft_dice(
    intersect: torch.Tensor, vol_pred: torch.Tensor, vol_gt: torch.Tensor, batch_dice: bool, smooth: float
) -> torch.Tensor:
    """The mean soft Dice of per-sample, per-class sums (B, K) (with `batch_dice`, summed over the batch first)."""
    if batch_dice:
        intersect, vol_pred, vol_gt = intersect.sum(0), vol_pred.sum(0), vol_gt.sum(0)
    return ((2 * intersect + smooth) / (vol_gt + vol_pred + smooth).clamp_min(1e-8)).mean()


class SoftDiceLoss(nn.Module):
    """Minus the mean soft Dice over foreground classes (and samples, unless batch_dice)."""

    def __init__(self, batch_dice: bool = False, smooth: float = DICE_SMOOTH, ignore_label: int | None = None):
        super().__init__()
        self.batch_dice, self.smooth, self.ignore_label = batch_dice, smooth, ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target, valid = _split_ignore(target, self.ignore_label)
        probs = torch.softmax(logits.float(), dim=1)
        return -mean_soft_dice(*soft_dice_stats(probs, target, valid, first_class=1), self.batch_dice, self.smooth)


class CrossEntropyLoss(nn.Module):
    """Mean voxel-wise cross-entropy; target (B, 1, *spatial); voxels equal to `ignore_label` are left out."""

    def __init__(self, ignore_label: int | None = None):
        super().__init__()
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ignore = -100 if self.ignore_label is None else self.ignore_label
        return F.cross_entropy(logits.float(), target[:, 0].long(), ignore_index=ignore)


class DiceCELoss(nn.Module):
    """weight_ce * CE + weight_dice * (-Dice) (nnU-Net's default: 1 and 1)."""

    def __init__(
        self, batch_dice: bool, weight_ce: float = 1.0, weight_dice: float = 1.0, ignore_label: int | None = None
    ):
        super().__init__()
        self.ce = CrossEntropyLoss(ignore_label)
        self.dice = SoftDiceLoss(batch_dice, ignore_label=ignore_label)
        self.weight_ce, self.weight_dice = weight_ce, weight_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.weight_ce * self.ce(logits, target) + self.weight_dice * self.dice(logits, target)


def region_masks(target: torch.Tensor, regions: Sequence[Sequence[int]]) -> torch.Tensor:
    """int target (B, 1, *S) -> bool (B, R, *S): voxel in region r iff its label is one of the region's values."""
    flat = target[:, 0]
    masks = []
    for r in regions:  # comparisons with Python ints: no host-to-device copy (a sync on CUDA) per step
        m = flat == r[0]
        for v in r[1:]:
            m |= flat == v
        masks.append(m)
    return torch.stack(masks, 1)


class RegionDiceBCELoss(nn.Module):
    """weight_bce * BCE - weight_dice * soft Dice, per region on sigmoid outputs (B, R, *S); target (B, 1, *S) int
    label values (or `ignore_label`). BCE is the mean over regions and valid voxels; Dice as `SoftDiceLoss` over all
    R outputs (batch_dice: sums over the batch first)."""

    def __init__(
        self,
        regions: Sequence[Sequence[int]],
        batch_dice: bool,
        weight_bce: float = 1.0,
        weight_dice: float = 1.0,
        ignore_label: int | None = None,
        smooth: float = DICE_SMOOTH,
    ):
        super().__init__()
        self.regions = tuple(tuple(int(v) for v in r) for r in regions)
        if not self.regions:
            raise ValueError("a region loss needs at least one region")
        self.batch_dice, self.ignore_label, self.smooth = batch_dice, ignore_label, smooth
        self.weight_bce, self.weight_dice = float(weight_bce), float(weight_dice)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != len(self.regions):
            raise ValueError(f"{logits.shape[1]} network outputs for {len(self.regions)} regions")
        target = target.long()
        onehot = region_masks(target, self.regions)
        logits = logits.float()
        bce = F.binary_cross_entropy_with_logits(logits, onehot.float(), reduction="none")
        probs = torch.sigmoid(logits)
        if self.ignore_label is not None:
            valid = target != self.ignore_label  # (B, 1, *S), broadcast over the regions
            bce = (bce * valid).sum() / (valid.sum() * len(self.regions)).clamp_min(1)
            probs, onehot = probs * valid, onehot & valid
        else:
            bce = bce.mean()
        b, r = probs.shape[:2]
        probs, onehot = probs.reshape(b, r, -1), onehot.reshape(b, r, -1)
        stats = (probs * onehot).sum(-1), probs.sum(-1), onehot.sum(-1, dtype=probs.dtype)
        return self.weight_bce * bce - self.weight_dice * mean_soft_dice(*stats, self.batch_dice, self.smooth)


def _split_ignore(target: torch.Tensor, ignore_label: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(target with ignored voxels set to 0, mask of valid voxels or None)."""
    target = target.long()
    if ignore_label is None:
        return target, None
    valid = target != ignore_label
    return torch.where(valid, target, torch.zeros_like(target)), valid


@losses.register("dice_ce")
def _dice_ce(
    num_classes: int,
    batch_dice: bool,
    ignore_label: int | None = None,
    weight_ce: float = 1.0,
    weight_dice: float = 1.0,
) -> nn.Module:
    return DiceCELoss(batch_dice, weight_ce, weight_dice, ignore_label)


@losses.register("dice_bce")
def _dice_bce(
    num_classes: int,
    batch_dice: bool,
    ignore_label: int | None = None,
    regions: Sequence[Sequence[int]] = (),
    weight_bce: float = 1.0,
    weight_dice: float = 1.0,
) -> nn.Module:
    if not regions:
        raise ConfigError("loss 'dice_bce' is for datasets with regions (dataset.json labels with lists of values)")
    return RegionDiceBCELoss(regions, batch_dice, weight_bce, weight_dice, ignore_label)


losses.register(
    "dice", lambda num_classes, batch_dice, ignore_label=None: SoftDiceLoss(batch_dice, ignore_label=ignore_label)
)
losses.register("ce", lambda num_classes, batch_dice, ignore_label=None: CrossEntropyLoss(ignore_label))


def build_loss(
    name: str,
    num_classes: int,
    batch_dice: bool,
    ignore_label: int | None = None,
    kwargs: Mapping[str, Any] | None = None,
    regions: Sequence[Sequence[int]] | None = None,
) -> nn.Module:
    """The registered loss `name` (unknown name: ConfigError listing the known ones), given `kwargs`
    (TrainConfig.loss_kwargs, checked against the builder's signature, e.g. "dice_ce": weight_ce, weight_dice).

    With `regions` (a dataset with regions) "dice_ce" means "dice_bce" and the builder gets ``regions=``."""
    if regions:
        name = "dice_bce" if name == "dice_ce" else name
        kwargs = {**(kwargs or {}), "regions": tuple(tuple(r) for r in regions)}
    return losses.create(name, num_classes, batch_dice, ignore_label, kwargs=kwargs)


def deep_supervision_weights(n: int) -> list[float]:
    """Weights for n outputs (highest resolution first): 1/2^i, the lowest resolution 0, normalised to sum 1."""
    if n < 1:
        raise ValueError(f"deep supervision needs at least one output, got n={n}")
    if n == 1:
        return [1.0]
    raw = [1 / 2**i for i in range(n - 1)] + [0.0]
    total = sum(raw)
    return [w / total for w in raw]


class DeepSupervisionLoss(nn.Module):
    """sum_i weights[i] * loss(outputs[i], targets[i]); terms with weight 0 are not computed."""

    def __init__(self, loss: nn.Module, weights: Sequence[float]):
        super().__init__()
        self.loss = loss
        self.weights = [float(w) for w in weights]

    def forward(self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
        if torch.is_tensor(outputs):
            outputs = [outputs]
        if torch.is_tensor(targets):
            targets = [targets]
        if not (len(outputs) == len(targets) == len(self.weights)):
            raise ValueError(
                f"deep supervision: {len(outputs)} outputs, {len(targets)} targets and {len(self.weights)} weights "
                "must be equally many"
            )
        terms = [w * self.loss(o, t) for w, o, t in zip(self.weights, outputs, targets) if w != 0]
        return torch.stack(terms).sum() if len(terms) > 1 else terms[0]
