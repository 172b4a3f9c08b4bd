"""Model selection on fake cross-validation results: best configuration or pair ensemble, ties, report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import write_label
from autoseg.data.probabilities import save_probabilities
from autoseg.errors import ConfigError
from autoseg.evaluation.select import Selection, maybe_select, predict_command, select_model, selection_report
from autoseg.fingerprint.fingerprint import SCHEMA_VERSION as FP_VERSION
from autoseg.fingerprint.fingerprint import DatasetFingerprint, IntensityStats
from autoseg.planning.plans import SCHEMA_VERSION, Configuration, NetworkSpec, Plans

DS = "Dataset993_Sel"
GEO = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel().tolist()))
CASES = [f"c{i}" for i in range(5)]
REF = np.array([1, 1, 1, 1, 0, 0, 0, 0])
# foreground probabilities per voxel: each single model gets 3 of 4 right plus 1 false positive (Dice 0.75);
# their average is right everywhere (Dice 1.0)
P_A = np.array([0.9, 0.9, 0.9, 0.2, 0.6, 0.1, 0.1, 0.1])
P_B = np.array([0.2, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.6])
P_PERFECT = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1])


def _conf(name: str) -> Configuration:
    params = {"strides": [[1, 1, 1]]}
    return Configuration(
        name,
        f"id_{name}",
        (1.0, 1.0, 1.0),
        (4, 4, 4),
        (4, 4, 4),
        2,
        False,
        ("zscore",),
        (False,),
        NetworkSpec("unet", params),
    )


def _fake_cv(ws, probs: dict[str, np.ndarray], finished=(0, 1, 2, 3, 4)) -> None:
    """Plans, fingerprint, splits (one case per fold), gt and each configuration's validation folders."""
    plans = Plans(
        SCHEMA_VERSION, "default", DS, "t", (0, 1, 2), (1.0,) * 3, (1, 1, 8), 8.0, tuple(_conf(c) for c in probs)
    )
    plans.save(ws.plans_file(DS))
    stats = IntensityStats(0, 0, 1, 0, 1, 0, 1)
    DatasetFingerprint(FP_VERSION, DS, ("MR",), {"bg": 0, "a": 1}, 5, ".nii.gz", (), (stats,), 1.0).save(
        ws.fingerprint_file(DS)
    )
    splits = [{"train": [c for c in CASES if c != v], "val": [v]} for v in CASES]
    ws.splits_file(DS).write_text(json.dumps(splits))
    for cid in CASES:
        write_label(ws.gt_folder(DS) / f"{cid}.nii.gz", REF.reshape(1, 1, 8), GEO)
    for name, fg in probs.items():
        p = np.stack([1 - fg, fg]).reshape(2, 1, 1, 8)
        for k, cid in enumerate(CASES):
            run = ws.run_dir(DS, "default", name, "default", k)
            if k not in finished:
                continue
            (run / "validation").mkdir(parents=True)
            (run / "checkpoint_final.pt").write_bytes(b"")
            (run / "validation" / "summary.json").write_text("{}")
            write_label(run / "validation" / f"{cid}.nii.gz", np.argmax(p, 0), GEO)
            save_probabilities(run / "validation" / f"{cid}.npz", p)


def test_pair_ensemble_wins_when_better(workspace):
    _fake_cv(workspace, {"2d": P_A, "3d_fullres": P_B})
    sel = select_model(workspace, 993)
    dice = {c.name: c.mean_dice for c in sel.candidates}
    assert dice == pytest.approx({"2d": 0.75, "3d_fullres": 0.75, "2d+3d_fullres": 1.0})
    assert sel.configurations == ("2d", "3d_fullres") and sel.is_ensemble
    assert sel.mean_dice == pytest.approx(1.0)
    assert sel.postprocessing.steps == ()
    assert Selection.load(workspace.selection_file(DS)) == sel
    crossval = workspace.run_dir(DS, "default", "2d", "default", 0).parent / "crossval"
    assert sorted(p.name for p in crossval.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in CASES]
    assert (workspace.results_dataset(DS) / "ensembles" / "default__default__2d+3d_fullres" / "summary.json").is_file()
    assert predict_command(sel) == "autoseg predict -i INPUT_FOLDER -o OUTPUT_FOLDER -d 993 --ensemble"
    report = selection_report(sel)
    assert "2d+3d_fullres" in report and "<- best" in report and "--ensemble" in report


def test_tie_prefers_single_configuration(workspace):
    _fake_cv(workspace, {"2d": P_A, "3d_fullres": P_PERFECT})
    sel = select_model(workspace, DS)
    dice = {c.name: c.mean_dice for c in sel.candidates}
    assert dice == pytest.approx({"2d": 0.75, "3d_fullres": 1.0, "2d+3d_fullres": 1.0})
    assert sel.configurations == ("3d_fullres",)
    assert predict_command(sel).endswith("-d 993 -c 3d_fullres")


def test_unfinished_configuration_is_skipped_and_maybe_select_waits(workspace):
    _fake_cv(workspace, {"2d": P_A, "3d_fullres": P_B}, finished=(0, 1, 2, 3))
    assert maybe_select(workspace, DS) is None  # no configuration has all 5 folds
    with pytest.raises(ConfigError, match="no configuration has all 5 folds finished"):
        select_model(workspace, DS)
    assert not workspace.selection_file(DS).exists()


def test_maybe_select_runs_when_one_configuration_is_complete(workspace):
    _fake_cv(workspace, {"2d": P_A})
    sel = maybe_select(workspace, DS)
    assert sel is not None and sel.configurations == ("2d",)
    assert [c.name for c in sel.candidates] == ["2d"]
    assert workspace.selection_file(DS).is_file()


def test_select_and_evaluate_commands(workspace, tmp_path, capsys):
    from autoseg.cli.main import main

    _fake_cv(workspace, {"2d": P_A, "3d_fullres": P_B})
    root = ["--workspace", str(workspace.root)]
    assert main(["select", "-d", "993", *root]) == 0
    out = capsys.readouterr().out
    assert "2d+3d_fullres" in out and "autoseg predict -i INPUT_FOLDER -o OUTPUT_FOLDER -d 993 --ensemble" in out
    pred = workspace.run_dir(DS, "default", "2d", "default", 0).parent / "crossval"
    ref = workspace.gt_folder(DS)
    assert main(["evaluate", "-r", str(ref), "-p", str(pred), "--labels", "1", "-o", str(tmp_path / "ev"), *root]) == 0
    out = capsys.readouterr().out
    assert "5 case(s)" in out and "fg mean" in out and "0.7500" in out
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["mean_dice"] == pytest.approx(0.75)
    assert (tmp_path / "ev" / "metrics_per_case.csv").read_text().count("\n") == 6  # header + 5 cases x 1 label
    assert main(["evaluate", "-r", str(ref), "-p", str(pred), *root]) == 0  # labels found in the references
    assert "0.7500" in capsys.readouterr().out
    assert main(["evaluate", "-r", str(tmp_path / "nope"), "-p", str(pred), *root]) == 1
    assert "nope: reference folder not found" in capsys.readouterr().err
