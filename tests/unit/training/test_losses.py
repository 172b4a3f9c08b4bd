"""Losses: hand-computed Dice/CE values, batch vs per-sample Dice, reference check, ignore label, deep supervision."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoseg.errors import ConfigError
from autoseg.training.losses import (
    DeepSupervisionLoss,
    SoftDiceLoss,
    build_loss,
    deep_supervision_weights,
    losses,
)

LN3 = math.log(3.0)


def onehot_logits(target: torch.Tensor, num_classes: int, scale: float = 50.0) -> torch.Tensor:
    """Logits that put (numerically) all probability on the target class. target (B, 1, *spatial)."""
    return scale * F.one_hot(target[:, 0], num_classes).movedim(-1, 1).float()


def test_perfect_prediction_gives_dice_minus_one_and_zero_ce():
    target = torch.tensor([[0, 1, 2, 2], [1, 1, 0, 2]]).reshape(2, 1, 2, 2)
    logits = onehot_logits(target, 3)
    for batch_dice in (True, False):
        assert build_loss("dice", 3, batch_dice)(logits, target).item() == pytest.approx(-1.0, abs=1e-6)
        assert build_loss("dice_ce", 3, batch_dice)(logits, target).item() == pytest.approx(-1.0, abs=1e-6)
    assert build_loss("ce", 3, False)(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_tiny_example_by_hand():
    # 4 voxels, 2 classes; logit difference (class1 - class0) ln3, 0, -ln3, 0 -> p1 = 0.75, 0.5, 0.25, 0.5
    diff = torch.tensor([LN3, 0.0, -LN3, 0.0])
    logits = torch.stack([torch.zeros(4), diff]).reshape(1, 2, 1, 4)
    target = torch.tensor([1, 1, 0, 0]).reshape(1, 1, 1, 4)
    # foreground Dice: I = 0.75 + 0.5, sum_pred = 2.0, sum_gt = 2 -> (2.5 + 1e-5) / (4 + 1e-5)
    dice = (2.5 + 1e-5) / (4.0 + 1e-5)
    # CE: -mean(ln 0.75, ln 0.5, ln 0.75, ln 0.5)
    ce = -(math.log(0.75) + math.log(0.5)) / 2
    assert build_loss("dice", 2, False)(logits, target).item() == pytest.approx(-dice, rel=1e-6)
    assert build_loss("ce", 2, False)(logits, target).item() == pytest.approx(ce, rel=1e-6)
    assert build_loss("dice_ce", 2, True)(logits, target).item() == pytest.approx(ce - dice, rel=1e-6)


def test_batch_dice_differs_from_per_sample_dice():
    # sample 0: target [1, 0] predicted perfectly; sample 1: target [0, 0], p1 = [0.5, 0.5]
    target = torch.tensor([[1, 0], [0, 0]]).reshape(2, 1, 1, 2)
    diff = torch.tensor([[50.0, -50.0], [0.0, 0.0]])
    logits = torch.stack([torch.zeros(2, 2), diff], dim=1).reshape(2, 2, 1, 2)
    per_sample = (1.0 + 1e-5 / (1 + 1e-5)) / 2  # sample 0: (2+s)/(2+s) = 1; sample 1: s / (1 + s)
    batch = (2 + 1e-5) / (3 + 1e-5)  # I = 1, sum_gt = 1, sum_pred = 1 + 1
    assert build_loss("dice", 2, False)(logits, target).item() == pytest.approx(-per_sample, rel=1e-6)
    assert build_loss("dice", 2, True)(logits, target).item() == pytest.approx(-batch, rel=1e-6)


def reference_dice(logits: torch.Tensor, target: torch.Tensor, batch_dice: bool) -> torch.Tensor:
    """Straightforward one-hot float64 soft Dice (background excluded), for comparison only."""
    probs = torch.softmax(logits.double(), 1)
    onehot = F.one_hot(target[:, 0], logits.shape[1]).movedim(-1, 1).double()
    axes = tuple(range(2, logits.ndim))
    axes = (0, *axes) if batch_dice else axes
    inter = (probs * onehot).sum(axes)
    dice = (2 * inter + 1e-5) / (probs.sum(axes) + onehot.sum(axes) + 1e-5)
    return -(dice[1:] if batch_dice else dice[:, 1:]).mean()


@pytest.mark.parametrize("batch_dice", [True, False])
def test_matches_one_hot_reference_values_and_gradients(batch_dice):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 4, 5, 6, 7, generator=g, requires_grad=True)
    target = torch.randint(0, 4, (3, 1, 5, 6, 7), generator=g)
    ours = SoftDiceLoss(batch_dice)(logits, target)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    ref = reference_dice(logits, target, batch_dice)
    (grad_ref,) = torch.autograd.grad(ref, logits)
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(grad_ours.double(), grad_ref.double(), rtol=1e-4, atol=1e-8)


def test_works_under_autocast_with_low_precision_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8, generator=g)
    target = torch.randint(0, 3, (2, 1, 8, 8, 8), generator=g)
    loss = build_loss("dice_ce", 3, True)
    full = loss(logits, target)
    conv = nn.Conv3d(3, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1, 1))
        conv.bias.zero_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = conv(logits)  # bfloat16 under autocast
        value = loss(low, target)
    assert low.dtype == torch.bfloat16 and value.dtype == torch.float32
    assert value.item() == pytest.approx(full.item(), abs=2e-2)


def test_ignore_label_voxels_do_not_count():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 1, 10, generator=g)
    target = torch.tensor([0, 1, 2, 5, 1, 5, 2, 0, 1, 5]).reshape(1, 1, 1, 10)
    keep = (target != 5).reshape(-1)
    for name in ("dice_ce", "dice", "ce"):
        masked = build_loss(name, 3, False, ignore_label=5)(logits, target)
        subset = build_loss(name, 3, False)(logits[..., keep], target[..., keep])
        assert masked.item() == pytest.approx(subset.item(), rel=1e-6), name


def test_deep_supervision_weights_like_nnunet():
    w = deep_supervision_weights(5)
    assert w == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0])
    assert [round(x, 4) for x in w] == [0.5333, 0.2667, 0.1333, 0.0667, 0.0]
    assert sum(w) == pytest.approx(1.0)
    assert deep_supervision_weights(2) == [1.0, 0.0]
    assert deep_supervision_weights(1) == [1.0]
    with pytest.raises(ValueError, match="at least one output"):
        deep_supervision_weights(0)


class CountingLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def forward(self, logits, target):
        self.shapes.append(tuple(logits.shape[2:]))
        return logits.float().mean() + target.float().mean()


def test_deep_supervision_loss_weights_terms_and_skips_zero_weights():
    inner = CountingLoss()
    ds = DeepSupervisionLoss(inner, [0.75, 0.25, 0.0])
    outputs = [torch.full((1, 2, s, s), float(v)) for s, v in ((8, 1.0), (4, 2.0), (2, 100.0))]
    targets = [torch.zeros(1, 1, s, s, dtype=torch.long) for s in (8, 4, 2)]
    assert ds(outputs, targets).item() == pytest.approx(0.75 * 1.0 + 0.25 * 2.0)
    assert inner.shapes == [(8, 8), (4, 4)]  # the zero-weight lowest resolution was never evaluated
    with pytest.raises(ValueError, match="2 outputs, 3 targets and 3 weights"):
        ds(outputs[:2], targets)


def test_deep_supervision_loss_with_one_output():
    ds = DeepSupervisionLoss(build_loss("ce", 2, False), [1.0])
    target = torch.tensor([0, 1]).reshape(1, 1, 2)
    logits = onehot_logits(target, 2)
    assert ds(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_registry_names_and_unknown_loss_error():
    assert {"dice_ce", "dice", "ce"} <= set(losses.names())
    with pytest.raises(ConfigError, match="unknown loss 'dice_cee'.*Known: .*ce, dice, dice_bce, dice_ce"):
        build_loss("dice_cee", 3, False)
