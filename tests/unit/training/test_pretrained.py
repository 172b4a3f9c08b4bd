"""Fine-tuning from pretrained weights: partial loading, head re-initialisation, first-convolution adaptation, the
error when nothing matches, where --pretrained finds its weights, frozen encoder and warm-up in a real run."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_run import quick_settings, train_args
from tiny_run_data import DATASET, tiny_plans

from autoseg.cli.main import main
from autoseg.errors import ConfigError
from autoseg.networks.build import build_network
from autoseg.training.checkpoint import load_checkpoint, save_checkpoint
from autoseg.training.config import TrainConfig
from autoseg.training.optim import scheduled_lr
from autoseg.training.pretrained import (
    first_conv_weight,
    load_pretrained,
    resolve_pretrained,
    set_encoder_frozen,
    transfer_weights,
)
from autoseg.training.trainer import Trainer, train_fold, trainers

SPEC = tiny_plans().configurations[0].network
HEADS = {f"decoder.seg_heads.{i}.{p}" for i in range(2) for p in ("weight", "bias")}
FIRST = "encoder.stages.0.0.conv.weight"


def net(in_channels: int, num_classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(SPEC, in_channels, num_classes, True)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_matching_tensors_load_and_heads_for_other_classes_are_reinitialised(tmp_path):
    source, target = net(1, 3, seed=1), net(1, 2, seed=2)
    src, before = snapshot(source), snapshot(target)
    report = transfer_weights(target, src, num_classes=2, source=tmp_path / "w.pt")
    after = target.state_dict()
    assert {name for name, _ in report.reinitialised} == HEADS and not report.adapted
    assert set(report.loaded) == set(after) - HEADS
    for name in report.loaded:  # copied bit for bit
        assert torch.equal(after[name], src[name]), name
    for name in HEADS:  # the new network's own initialisation, with the new number of classes
        assert torch.equal(after[name], before[name]) and after[name].shape[0] == 2
        assert src[name].shape[0] == 3
    reasons = dict(report.reinitialised)
    assert reasons["decoder.seg_heads.0.weight"] == "segmentation head, 3 -> 2 classes"
    text = "\n".join(report.lines())
    assert f"{len(after) - 4} of {len(after)} tensors loaded" in text
    assert "re-initialised decoder.seg_heads.1.bias: segmentation head, 3 -> 2 classes" in text


def test_partial_loading_reports_missing_and_unused_tensors(tmp_path):
    source, target = net(1, 3, seed=1), net(1, 3, seed=2)
    src, before = snapshot(source), snapshot(target)
    dropped = "decoder.stages.0.0.conv.weight"
    src["extra.weight"] = torch.ones(3)
    del src[dropped]
    report = transfer_weights(target, src, num_classes=3, source=tmp_path / "w.pt")
    assert dict(report.reinitialised) == {dropped: "not in the pretrained network"}
    assert report.unused == ("extra.weight",)
    assert torch.equal(target.state_dict()[dropped], before[dropped])
    assert torch.equal(target.state_dict()[FIRST], src[FIRST])


@pytest.mark.parametrize("src_channels,new_channels", [(1, 3), (2, 3), (4, 1)])
def test_first_convolution_is_adapted_to_other_input_channels(tmp_path, src_channels, new_channels):
    source, target = net(src_channels, 3, seed=1), net(new_channels, 3, seed=2)
    src = snapshot(source)
    report = transfer_weights(target, src, num_classes=3, source=tmp_path / "w.pt")
    assert first_conv_weight(target) == FIRST
    assert [name for name, _ in report.adapted] == [FIRST]
    assert f"{src_channels} -> {new_channels} input channels" in report.adapted[0][1]
    w = target.state_dict()[FIRST]
    assert w.shape == (4, new_channels, 3, 3, 3) and src[FIRST].shape == (4, src_channels, 3, 3, 3)
    expected = src[FIRST].mean(1) * src_channels / new_channels
    for c in range(new_channels):
        assert torch.allclose(w[:, c], expected, rtol=0, atol=1e-7)
    assert set(report.loaded) == set(src) - {FIRST}  # everything else bit-equal
    for name in report.loaded:
        assert torch.equal(target.state_dict()[name], src[name])
    # an input whose channels all hold the same value gets the first convolution's old response
    x = torch.randn(1, 1, 5, 6, 6)
    old = torch.nn.functional.conv3d(x.repeat(1, src_channels, 1, 1, 1), src[FIRST])
    new = torch.nn.functional.conv3d(x.repeat(1, new_channels, 1, 1, 1), w)
    assert torch.allclose(old, new, atol=1e-5)


def test_nothing_in_common_is_an_error_naming_the_file_and_the_networks(tmp_path):
    target = net(1, 3, seed=2)
    before = snapshot(target)
    foreign = {"conv1.weight": torch.ones(8, 3, 7, 7), "fc.weight": torch.ones(10, 8)}
    file = tmp_path / "resnet.pt"
    torch.save(foreign, file)
    with pytest.raises(ConfigError) as info:
        load_pretrained(target, file, "3d_fullres", 3, target="unet")
    msg = str(info.value)
    assert str(file) in msg and "2 tensors, first conv1.weight [8, 3, 7, 7]" in msg
    assert "new network unet (" in msg and f"first {FIRST} [4, 1, 3, 3, 3]" in msg
    assert "--transfer-plans-from" in msg
    assert all(torch.equal(target.state_dict()[k], v) for k, v in before.items())


def test_resolve_checkpoint_run_folder_and_bundle(tmp_path):
    weights = snapshot(net(1, 3, seed=1))
    fold = tmp_path / "results" / "trainer" / "fold_2"
    fold.mkdir(parents=True)
    save_checkpoint(fold / "checkpoint_final.pt", {"model": weights})
    assert resolve_pretrained(fold, "3d_fullres") == fold / "checkpoint_final.pt"
    assert resolve_pretrained(fold.parent, "3d_fullres") == fold / "checkpoint_final.pt"  # lowest finished fold
    assert resolve_pretrained(fold / "checkpoint_final.pt", "x") == fold / "checkpoint_final.pt"
    bundle = tmp_path / "bundle"
    for f in (1, "all"):
        (bundle / "models" / "3d_fullres" / f"fold_{f}").mkdir(parents=True)
        torch.save(weights, bundle / "models" / "3d_fullres" / f"fold_{f}" / "weights.pt")
    tiny_plans().save(bundle / "plans.json")
    (bundle / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 6,
        "file_ending": ".nii.gz",
    }))  # fmt: skip
    (bundle / "bundle.json").write_text(json.dumps({
        "format_version": 1, "dataset": DATASET, "plans_name": "default", "trainer": "default",
        "models": {"3d_fullres": [1, "all"]},
    }))  # fmt: skip
    assert resolve_pretrained(bundle, "3d_fullres") == bundle / "models/3d_fullres/fold_all/weights.pt"
    assert resolve_pretrained(bundle, "2d") == bundle / "models/3d_fullres/fold_all/weights.pt"  # its only one
    target = net(1, 3, seed=5)
    report = load_pretrained(target, bundle, "3d_fullres", 3)
    assert len(report.loaded) == len(weights) and torch.equal(target.state_dict()[FIRST], weights[FIRST])
    with pytest.raises(ConfigError, match=r"missing: --pretrained not found; give a checkpoint file"):
        resolve_pretrained(tmp_path / "missing", "3d_fullres")
    with pytest.raises(ConfigError, match=r"empty: no checkpoint_final.pt, no finished fold_\* and no bundle.json"):
        (tmp_path / "empty").mkdir()
        resolve_pretrained(tmp_path / "empty", "3d_fullres")


def test_frozen_encoder_gets_no_update():
    model = net(1, 3, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    before = snapshot(model)
    set_encoder_frozen(model, True)
    opt.zero_grad(set_to_none=True)
    model(torch.randn(2, 1, 8, 16, 16))[0].square().mean().backward()
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("encoder."))
    assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith("decoder."))
    set_encoder_frozen(model, False)
    assert all(p.requires_grad for p in model.parameters())


def test_warmup_then_poly_schedule_and_config_checks():
    assert [scheduled_lr(0.01, e, 6, 0.9, 2) for e in (0, 1)] == pytest.approx([0.01 / 3, 0.02 / 3])
    assert scheduled_lr(0.01, 2, 6, 0.9, 2) == pytest.approx(0.01)  # the poly schedule starts after the warm-up
    assert scheduled_lr(0.01, 4, 6, 0.9, 2) == pytest.approx(0.01 * 0.5**0.9)
    assert scheduled_lr(0.01, 3, 6, 0.9, 0) == pytest.approx(0.01 * 0.5**0.9)  # no warm-up: plain poly
    with pytest.raises(ConfigError, match="warmup_epochs must be >= 0 and < epochs"):
        TrainConfig(epochs=2, warmup_epochs=2)
    with pytest.raises(ConfigError, match="freeze_encoder_epochs must be >= 0"):
        TrainConfig(freeze_encoder_epochs=-1)


SNAPSHOTS: list[tuple[float, dict[str, torch.Tensor]]] = []


@trainers.register("test_snapshot_each_epoch")
class SnapshotTrainer(Trainer):
    def on_epoch_end(self, epoch, record):
        SNAPSHOTS.append((record.lr, snapshot(self.model)))


def test_cli_fine_tunes_from_a_run_folder(tiny, capsys):
    ws, _ = tiny
    assert main(train_args(ws, fold=0, epochs=1)) == 0
    source = ws.run_dir(DATASET, "default", "3d_fullres", "default", 0)
    pretrained = load_checkpoint(source / "checkpoint_final.pt")["model"]
    capsys.readouterr()
    assert main(train_args(ws, "--pretrained", str(source), fold=1, epochs=1)) == 0
    n = len(pretrained)
    assert (
        f"pretrained weights from {source / 'checkpoint_final.pt'}: {n} of {n} tensors loaded"
        in capsys.readouterr().err
    )
    cfg = json.loads((ws.run_dir(DATASET, "default", "3d_fullres", "default", 1) / "train_config.json").read_text())
    assert cfg["pretrained"] == str(source.resolve())

    # in-process: frozen encoder in epoch 0, trained in epoch 1; linear warm-up over epoch 0
    SNAPSHOTS.clear()
    cfg = TrainConfig(**{**quick_settings(2, 2), "pretrained": str(source), "freeze_encoder_epochs": 1,
                         "warmup_epochs": 1, "lr": 0.001})  # fmt: skip
    train_fold(ws, DATASET, tiny[1], "3d_fullres", 2, cfg, trainer="test_snapshot_each_epoch", device="cpu",
               num_workers=0)  # fmt: skip
    (lr0, after0), (lr1, after1) = SNAPSHOTS
    assert (lr0, lr1) == pytest.approx((0.0005, 0.001))
    enc = [k for k in pretrained if k.startswith("encoder.")]
    dec = [k for k in pretrained if k.startswith("decoder.")]
    assert all(torch.equal(after0[k], pretrained[k]) for k in enc)  # frozen: bit-equal, weight decay included
    assert any(not torch.equal(after0[k], pretrained[k]) for k in dec)
    assert any(not torch.equal(after1[k], after0[k]) for k in enc)  # trained from epoch 1


def test_cli_error_when_nothing_matches_writes_no_run(tiny, tmp_path, capsys):
    ws, _ = tiny
    file = tmp_path / "other.pt"
    torch.save({"conv1.weight": torch.ones(8, 3, 7, 7)}, file)
    assert main(train_args(ws, "--pretrained", str(file), fold=3)) == 1
    err = capsys.readouterr().err
    assert str(file) in err and "matches the new network unet" in err
    assert not (ws.run_dir(DATASET, "default", "3d_fullres", "default", 3) / "train_config.json").exists()
