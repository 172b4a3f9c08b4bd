"""`autoseg plan`: -d N with a workspace fingerprint, --fingerprint FILE (autoseg's or nnU-Net's), --explain, --set."""

from __future__ import annotations

import json
import shutil

import pytest
from test_nnunet_agreement import CASES_DIR

from autoseg.cli.main import main
from autoseg.fingerprint.nnunet_compat import from_nnunet
from autoseg.planning.plans import Plans

DATASET = "Dataset605_Prostate"


@pytest.fixture
def ws_with_fingerprint(workspace):
    fp = from_nnunet(CASES_DIR / "msd05_prostate" / "fingerprint.json", dataset_name=DATASET)
    fp.save(workspace.fingerprint_file(DATASET))
    return workspace


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_dataset_writes_plans_and_explains(ws_with_fingerprint, capsys):
    ws = ws_with_fingerprint
    code, out, _ = run(capsys, "plan", "-d", "605", "--workspace", str(ws.root), "--explain")
    assert code == 0
    plans = Plans.load(ws.plans_file(DATASET))
    full = plans.configuration("3d_fullres")
    assert full.patch_size == (20, 320, 256) and full.batch_size == 2  # nnU-Net's answer for this fingerprint
    assert "z target 3.256 mm: 10th percentile, because median z spacing 3.6 > 3 x 0.625" in out
    assert "20 slices x 3 < 320" in out
    assert "3d_fullres     3.256 x 0.625 x 0.625" in out and f"wrote {ws.plans_file(DATASET)}" in out


def test_set_writes_a_named_variant(ws_with_fingerprint, capsys):
    ws = ws_with_fingerprint
    argv = ["plan", "-d", "605", "--workspace", str(ws.root), "--name", "bs4"]
    code, out, _ = run(capsys, *argv, "--set", "3d_fullres.batch_size=4", "--set", "3d_fullres.patch_size=[16,64,64]")
    assert code == 0
    variant = Plans.load(ws.plans_file(DATASET, "bs4"))
    assert variant.name == "bs4" and variant.configuration("3d_fullres").batch_size == 4
    assert variant.configuration("3d_fullres").patch_size == (16, 64, 64)
    assert not ws.plans_file(DATASET).exists()  # the default plans are not touched


def test_bad_set_is_one_line_error(ws_with_fingerprint, capsys):
    ws = ws_with_fingerprint
    argv = ["plan", "-d", "605", "--workspace", str(ws.root)]
    code, _, err = run(capsys, *argv, "--name", "x", "--set", "3d_fullres.patch_size=[20,320,250]")
    assert code == 1 and "configuration '3d_fullres': patch_size [20, 320, 250] is not divisible" in err
    code, _, err = run(capsys, *argv, "--set", "3d_fullres.batch_size=4")
    assert code == 1 and "--set writes a named plans variant: add --name NAME" in err


def test_preset_gets_its_own_plans_file(ws_with_fingerprint, capsys):
    ws = ws_with_fingerprint
    code, out, _ = run(capsys, "plan", "-d", "605", "--workspace", str(ws.root), "--preset", "resenc-l")
    assert code == 0
    plans = Plans.load(ws.plans_file(DATASET, "resenc-l"))
    assert plans.planner == "resenc-l" and plans.gpu_memory_gb == 24
    assert plans.configuration("3d_fullres").network.name == "resenc_unet"


def test_plan_from_nnunet_fingerprint_file(tmp_path, capsys):
    src = tmp_path / "Dataset604"
    src.mkdir()
    for name in ("fingerprint.json", "dataset.json"):
        shutil.copy(CASES_DIR / "msd03_liver" / name, src / name)
    out_file = tmp_path / "plans.json"
    code, out, err = run(capsys, "plan", "--fingerprint", str(src / "fingerprint.json"), "-o", str(out_file))
    assert code == 0 and "workspace" not in err
    plans = Plans.load(out_file)
    ref = json.loads((CASES_DIR / "msd03_liver" / "nnunet_plans_ExperimentPlanner.json").read_text())
    assert plans.names() == ["2d", "3d_lowres", "3d_fullres", "3d_cascade_fullres"]
    assert list(plans.configuration("3d_lowres").patch_size) == ref["configurations"]["3d_lowres"]["patch_size"]
    assert "3d_cascade_fullres" in out


def test_plan_from_autoseg_fingerprint_without_output(tmp_path, capsys):
    path = from_nnunet(CASES_DIR / "msd04_hippocampus" / "fingerprint.json").save(tmp_path / "fp.json")
    code, out, _ = run(capsys, "plan", "--fingerprint", str(path))
    assert code == 0 and "not written (pass -o PLANS_JSON" in out
    row = next(line for line in out.splitlines() if line.startswith("3d_fullres"))
    assert row.split()[1:] == "1 x 1 x 1 36 x 50 x 35 40 x 56 x 40 9 4 unet 3d_fullres".split()


def test_missing_fingerprint_is_a_clear_error(tmp_path, capsys):
    code, _, err = run(capsys, "plan", "--fingerprint", str(tmp_path / "nope.json"))
    assert code == 1 and "nope.json: file not found" in err
