"""Region losses (sigmoid, Dice + BCE per region), the ignore label in every loss, and pseudo-Dice for both."""

import pytest
import torch
import torch.nn.functional as F

from autoseg.errors import ConfigError
from autoseg.training.loop import confusion
from autoseg.training.losses import (
    DeepSupervisionLoss,
    DiceCELoss,
    RegionDiceBCELoss,
    build_loss,
    region_masks,
)

REGIONS = ((1, 2), (2,))
IGNORE = 3


def _target(seed: int, shape=(2, 1, 6, 7, 5)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, shape, generator=g)  # values 0..3, 3 = ignore


def _losses():
    return [
        ("dice_ce batch", DiceCELoss(True, ignore_label=IGNORE), 3),
        ("dice_ce per sample", DiceCELoss(False, ignore_label=IGNORE), 3),
        ("regions batch", RegionDiceBCELoss(REGIONS, True, ignore_label=IGNORE), 2),
        ("regions per sample", RegionDiceBCELoss(REGIONS, False, ignore_label=IGNORE), 2),
    ]


@pytest.mark.parametrize("name, loss_fn, channels", _losses(), ids=[n for n, _, _ in _losses()])
def test_ignored_voxels_contribute_exactly_nothing_to_loss_and_gradient(name, loss_fn, channels):
    target = _target(0)
    ignored = (target == IGNORE).expand(-1, channels, -1, -1, -1)
    assert ignored.any() and (~ignored).any()
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, channels, 6, 7, 5, generator=g, requires_grad=True)
    loss = loss_fn(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.count_nonzero(logits.grad[ignored]) == 0  # exactly zero, not small
    assert torch.count_nonzero(logits.grad[~ignored]) > 0.9 * (~ignored).sum()
    # any other logits at the ignored voxels, and any other label there: the same loss, bit for bit
    other = logits.detach().clone()
    other[ignored] = torch.randn(int(ignored.sum()), generator=g) * 50
    assert torch.equal(loss_fn(other, target), loss.detach())
    target_other = torch.where(target == IGNORE, torch.full_like(target, IGNORE), target)
    assert torch.equal(loss_fn(logits.detach(), target_other), loss.detach())


def test_ignore_under_deep_supervision_is_zero_at_every_scale():
    target = _target(2, (2, 1, 8, 8, 8))
    low = target[:, :, ::2, ::2, ::2].contiguous()
    ds = DeepSupervisionLoss(RegionDiceBCELoss(REGIONS, False, ignore_label=IGNORE), [0.75, 0.25])
    outs = [torch.randn(2, 2, 8, 8, 8, requires_grad=True), torch.randn(2, 2, 4, 4, 4, requires_grad=True)]
    ds(outs, [target, low]).backward()
    for out, t in zip(outs, (target, low)):
        assert torch.count_nonzero(out.grad[(t == IGNORE).expand(-1, 2, -1, -1, -1)]) == 0


def test_region_loss_equals_bce_minus_dice_computed_by_hand():
    target = torch.tensor([0, 1, 2, 2, 1, 0]).reshape(1, 1, 6)
    logits = torch.tensor([[-1.0, 2.0, 0.5, 3.0, 1.0, -2.0], [0.0, -1.0, 2.0, 1.0, -3.0, 0.5]]).reshape(1, 2, 6)
    masks = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0]], dtype=torch.float32).reshape(1, 2, 6)
    assert torch.equal(region_masks(target, REGIONS).float(), masks)
    bce = F.binary_cross_entropy_with_logits(logits, masks)
    p = torch.sigmoid(logits)
    dice = ((2 * (p * masks).sum(-1) + 1e-5) / (p.sum(-1) + masks.sum(-1) + 1e-5)).mean()
    got = RegionDiceBCELoss(REGIONS, False)(logits, target)
    assert got.item() == pytest.approx((bce - dice).item(), abs=1e-6)


def test_region_loss_of_a_perfect_prediction_is_minus_one():
    target = torch.tensor([0, 1, 2, 2, 1, 0]).reshape(1, 1, 6)
    logits = (region_masks(target, REGIONS).float() * 2 - 1) * 30
    assert RegionDiceBCELoss(REGIONS, True)(logits, target).item() == pytest.approx(-1.0, abs=1e-6)


def test_build_loss_with_regions_and_errors():
    loss = build_loss("dice_ce", 2, True, IGNORE, {"weight_bce": 2.0}, regions=REGIONS)
    assert isinstance(loss, RegionDiceBCELoss) and loss.regions == REGIONS and loss.ignore_label == IGNORE
    assert loss.weight_bce == 2.0
    with pytest.raises(ConfigError, match="'dice_bce' is for datasets with regions"):
        build_loss("dice_bce", 3, True)
    with pytest.raises(ValueError, match="3 network outputs for 2 regions"):
        loss(torch.zeros(1, 3, 4), torch.zeros(1, 1, 4, dtype=torch.long))


def test_pseudo_dice_counts_regions_and_leaves_out_ignored_voxels():
    target = torch.tensor([0, 1, 2, 2, 3, 3, 1]).reshape(1, 1, 7)
    # region outputs (logit > 0 = predicted): whole on voxels 1, 2, 4, 5; posterior on voxels 0, 3, 5
    logits = torch.tensor([[-1, 1, 1, -1, 1, 1, -1], [1, -1, -1, 1, -1, 1, -1]], dtype=torch.float32)
    logits = logits.reshape(1, 2, 7)
    counts = confusion(logits, target, 0, REGIONS, IGNORE)
    # whole = {1, 2} on voxels 1, 2, 3, 6 (4, 5 ignored): TP 1, 2; FP none counted; FN 3, 6
    # posterior = {2} on voxels 2, 3: TP voxel 3; FP voxel 0; FN voxel 2
    assert counts.tolist() == [[2, 1], [0, 1], [2, 1]]
    # plain labels, argmax [0, 1, 2, 2, 1, 2, 0]: label 1 TP voxel 1, FN voxel 6; label 2 TP voxels 2, 3; the
    # predictions on the ignored voxels 4 (1) and 5 (2) are not counted
    plain = torch.full((1, 3, 7), -5.0)
    plain[0, [0, 1, 2, 2, 1, 2, 0], torch.arange(7)] = 5.0
    assert confusion(plain, target, 3, (), IGNORE).tolist() == [[1, 2], [0, 0], [1, 0]]
    assert confusion(plain, target, 3).tolist() == [[1, 2], [1, 1], [1, 0]]  # without ignore: two more FP
