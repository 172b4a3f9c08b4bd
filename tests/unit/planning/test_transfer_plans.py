"""Plans transferred between datasets: architecture, patch and batch size from the source; spacing, normalisation and
intensity statistics from the target; axis order; dropped configurations; the CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
from test_nnunet_agreement import CASES_DIR

from autoseg.cli.main import main
from autoseg.errors import PlansError
from autoseg.fingerprint.nnunet_compat import from_nnunet
from autoseg.planning.planner import plan_dataset
from autoseg.planning.plans import Plans
from autoseg.planning.transfer import transfer_plans
from autoseg.workspace import Workspace


def planned(case: str) -> Plans:
    return plan_dataset(from_nnunet(CASES_DIR / case / "fingerprint.json"))[0]


@pytest.fixture(scope="module")
def liver():  # CT, cascade planned
    return planned("msd03_liver")


@pytest.fixture(scope="module")
def prostate():  # two MRI channels, anisotropic, no cascade
    return planned("msd05_prostate")


def test_fields_come_from_the_right_dataset(liver, prostate, tmp_path):
    plans, notes = transfer_plans(liver, prostate, "from_liver")
    assert plans.name == "from_liver" and plans.dataset == prostate.dataset
    assert plans.names() == ["2d", "3d_fullres"]  # the target's own plans have no cascade
    assert plans.transpose == liver.transpose and plans.gpu_memory_gb == liver.gpu_memory_gb
    assert plans.intensity == prostate.intensity and plans.intensity != liver.intensity
    assert plans.original_median_spacing == prostate.original_median_spacing
    for name in plans.names():
        new, src, tgt = plans.configuration(name), liver.configuration(name), prostate.configuration(name)
        # from the source: what the pretrained network needs
        assert new.network == src.network and new.patch_size == src.patch_size
        assert new.batch_size == src.batch_size and new.batch_dice == src.batch_dice
        assert new.patch_size != tgt.patch_size
        # from the target: how its images are preprocessed
        assert new.spacing == tgt.spacing and new.spacing != src.spacing
        assert new.median_shape == tgt.median_shape
        assert new.normalization == ("zscore", "zscore") and src.normalization == ("ct",)
        assert new.use_mask_for_norm == tgt.use_mask_for_norm and new.resampling == tgt.resampling
        assert new.data_identifier == tgt.data_identifier  # same axis order: the target's preprocessed data
    assert "3d_lowres: dropped, the target's own plans have no such configuration" in notes
    assert "3d_cascade_fullres: dropped, the target's own plans have no such configuration" in notes
    assert any(n.startswith("input channels: 1 in") and "adapts the first convolution" in n for n in notes)
    assert Plans.load(plans.save(tmp_path / "p.json")) == plans  # valid plans


def test_cascade_is_kept_when_both_plan_it():
    source, target = planned("msd09_spleen"), planned("msd07_pancreas")
    plans, _ = transfer_plans(source, target, "t")
    assert plans.names() == source.names()
    low = plans.configuration("3d_lowres")
    assert low.spacing == target.configuration("3d_lowres").spacing
    assert low.patch_size == source.configuration("3d_lowres").patch_size
    assert plans.configuration("3d_cascade_fullres").previous_stage == "3d_lowres"


def test_other_axis_order_reorders_spacing_and_gets_own_data():
    source, target = planned("odd10_coarse_last_axis"), planned("msd02_heart")
    assert source.transpose == (2, 0, 1) and target.transpose == (0, 1, 2)
    plans, notes = transfer_plans(source, target, "t")
    full, tgt = plans.configuration("3d_fullres"), target.configuration("3d_fullres")
    assert plans.transpose == (2, 0, 1)
    assert full.spacing == (tgt.spacing[2], tgt.spacing[0], tgt.spacing[1])  # target spacing, source axis order
    assert full.median_shape == (tgt.median_shape[2], tgt.median_shape[0], tgt.median_shape[1])
    assert full.data_identifier == "3d_fullres_t"
    assert "2d" not in plans.names() and any(n.startswith("2d: dropped, its axes differ") for n in notes)


def test_nothing_transferable_is_an_error():
    source, target = planned("msd04_hippocampus"), planned("odd05_2d_large_2048")
    with pytest.raises(PlansError, match="different dimensions|no configuration"):
        transfer_plans(planned("odd10_coarse_last_axis"), target, "t")
    plans, _ = transfer_plans(source, target, "t")  # the 2d configuration transfers
    assert plans.names() == ["2d"]


def test_cli_transfer_plans_from(tmp_path, capsys):
    ws = Workspace.at(tmp_path / "ws")
    for ds, case in (("Dataset004_Hippocampus", "msd04_hippocampus"), ("Dataset005_Prostate", "msd05_prostate")):
        fp = from_nnunet(CASES_DIR / case / "fingerprint.json")
        dataclasses.replace(fp, dataset=ds).save(ws.fingerprint_file(ds))
        (ws.raw / ds).mkdir(parents=True)
    root = ["--workspace", str(ws.root)]
    assert main(["plan", "-d", "4", *root]) == 0
    assert main(["plan", "-d", "5", "--transfer-plans-from", "4", *root]) == 0
    out = capsys.readouterr().out
    path = ws.plans_file("Dataset005_Prostate", "from_Dataset004_Hippocampus")
    assert f"wrote {path}" in out and "patch [40, 56, 40], batch 9 from Dataset004_Hippocampus" in out
    plans, source = Plans.load(path), Plans.load(ws.plans_file("Dataset004_Hippocampus"))
    assert plans.configuration("3d_fullres").patch_size == source.configuration("3d_fullres").patch_size
    assert json.loads(path.read_text())["dataset"] == "Dataset005_Prostate"
    assert not ws.plans_file("Dataset005_Prostate").exists()  # the target's default plans are not written
    assert main(["plan", "-d", "5", "--transfer-plans-from", "4", "--source-plans", "nope", *root]) == 1
    assert "plans_nope.json: source plans not found" in capsys.readouterr().err
