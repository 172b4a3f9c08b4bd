"""Every error `autoseg demo` can meet, triggered through the CLI: exit code and message (no training is run).

The stages after data generation are replaced by stubs where a test needs to get past them; the audit table is in
docs/reliability.md ("Demo error paths").
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

import autoseg.data.synthetic as synthetic
import autoseg.demo as demo
import autoseg.evaluation.metrics as metrics
import autoseg.inference.predictor as predictor
import autoseg.preprocessing.pipeline as pipeline
import autoseg.training.run as training
from autoseg.cli.main import main
from autoseg.demo import DEMO_DATASET, SETTINGS_FILE, generate
from autoseg.demo_stages import DemoError, DemoSettings
from autoseg.errors import ConfigError, DatasetError, ImageIOError, PlansError
from autoseg.workspace import Workspace

TINY = DemoSettings(n_train=5, n_test=1, shape=(8, 16, 16), epochs=1, iterations_per_epoch=1, tta=False)


@pytest.fixture(autouse=True)
def tiny_fast(monkeypatch):
    """`--fast` generates a tiny dataset here (the full preset's data is only generated where a test says so)."""
    monkeypatch.setattr(DemoSettings, "fast", classmethod(lambda cls: TINY))


def run(capsys, ws_root: Path, *args: str) -> tuple[int, str]:
    code = main(["demo", "--workspace", str(ws_root), *args])
    return code, capsys.readouterr().err


def argparse_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(["demo", *args])
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def stub_stages(monkeypatch, tmp_path):
    """Replace every stage after data generation by a stub; returns the calls made (stage -> kwargs)."""
    calls: dict[str, dict] = {}

    def plan_and_preprocess(ws, name, **kw):
        calls["preprocess"] = kw
        return SimpleNamespace(plans_file=ws.plans_file(name))

    def train_folds(ws, name, configs, **kw):
        calls["train"] = kw
        return [SimpleNamespace(run_dir=ws.run_dir(name, "default", configs[0], "default", 0))]

    def run_predict(ws, inp, out, **kw):
        calls["predict"] = kw
        return []

    def evaluate_folder(ref, pred, labels, ending, jobs=1):
        calls["evaluate"] = {"labels": labels}
        return None, {"mean": {"1": {"dice": 0.75}, "2": {"dice": 0.25}}}

    monkeypatch.setattr(pipeline, "plan_and_preprocess", plan_and_preprocess)
    monkeypatch.setattr(training, "train_folds", train_folds)
    monkeypatch.setattr(predictor, "run_predict", run_predict)
    monkeypatch.setattr(metrics, "evaluate_folder", evaluate_folder)
    monkeypatch.setattr(metrics, "save_evaluation", lambda df, s, out: (out / "metrics.csv", out / "summary.json"))
    monkeypatch.setattr(demo, "_overlay_first", lambda folder, ref, pred, out: out / "overlay.png")
    return calls


# ---- command line -----------------------------------------------------------------------------------------------
def test_unknown_device_is_refused_by_the_parser(capsys):
    err = argparse_error(capsys, "--device", "gpu")
    assert "autoseg demo: error: argument --device: invalid choice: 'gpu'" in err
    assert "'cpu'" in err and "'cuda'" in err


def test_options_that_fast_does_not_take(capsys):
    err = argparse_error(capsys, "--fast", "--epochs", "3")
    assert "error: unrecognized arguments: --epochs 3" in err
    err = argparse_error(capsys, "--fast=yes")
    assert "argument --fast: ignored explicit argument 'yes'" in err


def test_cuda_requested_without_cuda_fails_before_writing(capsys, monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = run(capsys, tmp_path / "ws", "--fast", "--device", "cuda")
    assert code == 1
    assert "autoseg demo: error: --device cuda: CUDA is not available on this machine" in err
    assert "--device cpu" in err and "Traceback" not in err
    assert not (tmp_path / "ws").exists()


def test_device_values_of_the_python_api():
    with pytest.raises(ConfigError, match=r"--device 'tpu': the demo runs on cpu or cuda"):
        demo.check_device("tpu")
    demo.check_device("cpu")
    demo.check_device(None)


def test_settings_the_pipeline_cannot_run_are_refused():
    with pytest.raises(ConfigError, match=r"n_train=4; fold 0 of a 5-fold split needs at least 5"):
        DemoSettings(n_train=4)
    with pytest.raises(ConfigError, match=r"n_test=0; evaluation needs at least 1 held-out case"):
        DemoSettings(n_test=0)
    with pytest.raises(ConfigError, match=r"epochs=0, iterations_per_epoch=20; both must be at least 1"):
        DemoSettings(epochs=0)


# ---- workspace -------------------------------------------------------------------------------------------------
def test_workspace_that_is_a_file(capsys, tmp_path):
    target = tmp_path / "ws"
    target.write_text("not a folder")
    code, err = run(capsys, target, "--fast")
    assert code == 1
    assert f"workspace folder {target} cannot be created: {target} is a file, not a folder" in err
    assert "pass --workspace with the path of a folder" in err
    assert target.read_text() == "not a folder"


def test_file_where_a_workspace_subfolder_should_be(capsys, tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "raw").write_text("")
    code, err = run(capsys, tmp_path / "ws", "--fast")
    assert code == 1
    assert f"workspace folder {tmp_path / 'ws' / 'raw'} cannot be created: {tmp_path / 'ws' / 'raw'} is a file" in err


def test_workspace_that_is_not_writable(capsys, monkeypatch, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    root.chmod(0o555)
    if os.access(root, os.W_OK):  # running as root: permissions do not stop us, so the folder refuses a file
        real = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kw):
            if Path(dir) == root:
                raise PermissionError(13, "Permission denied", str(root))
            return real(*args, dir=dir, **kw)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    try:
        code, err = run(capsys, root, "--fast")
    finally:
        root.chmod(0o755)
    assert code == 1
    assert f"autoseg demo: error: workspace folder {root} is not writable (Permission denied)" in err
    assert "choose a writable folder with --workspace" in err


# ---- a demo dataset already in the workspace ------------------------------------------------------------------
def test_dataset_made_with_other_settings_is_kept_and_named(capsys, tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    folder = generate(ws, TINY, ws.root / "demo" / "reference_labels")  # what `autoseg demo --fast` made
    before = (folder / SETTINGS_FILE).read_bytes()
    code, err = run(capsys, ws.root)  # the full preset
    assert code == 1
    assert f"{folder} holds the demo dataset made with the settings of `autoseg demo --fast`" in err
    assert "but this run uses the settings of `autoseg demo`" in err
    assert "run the demo in another workspace (--workspace NEW_FOLDER), or delete" in err
    assert (folder / SETTINGS_FILE).read_bytes() == before
    assert len(list((folder / "imagesTr").iterdir())) == TINY.n_train


def test_folder_not_made_by_the_demo(capsys, tmp_path):
    folder = tmp_path / "ws" / "raw" / DEMO_DATASET
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "dataset.json").write_text("{}")
    code, err = run(capsys, tmp_path / "ws", "--fast")
    assert code == 1
    assert f"{folder} exists but was not made by this version of `autoseg demo`" in err
    assert f"({SETTINGS_FILE} is missing); delete {folder}" in err
    assert (folder / "dataset.json").read_text() == "{}"


def test_unreadable_settings_file(capsys, tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    folder = generate(ws, TINY, ws.root / "demo" / "reference_labels")
    (folder / SETTINGS_FILE).write_text("{")
    code, err = run(capsys, ws.root, "--fast")
    assert code == 1
    assert f"{folder / SETTINGS_FILE}: not valid JSON (line 1, column 2" in err
    assert "run the demo in another workspace" in err


def test_models_left_without_their_dataset(capsys, tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    (ws.results / DEMO_DATASET / "default").mkdir(parents=True)
    code, err = run(capsys, ws.root, "--fast")
    assert code == 1
    assert f"the demo dataset {ws.raw / DEMO_DATASET} is missing but its preprocessed data or models" in err
    assert f"still in {ws.results / DEMO_DATASET}; the demo will not mix them" in err
    assert (ws.results / DEMO_DATASET / "default").is_dir()


def test_interrupted_generation_is_redone(capsys, tmp_path, stub_stages):
    ws = Workspace.at(tmp_path / "ws")
    half = ws.raw / f".{DEMO_DATASET}.tmp" / DEMO_DATASET / "imagesTr"
    half.mkdir(parents=True)
    (half / "case_000_0000.nii.gz").write_bytes(b"\x1f\x8b truncated")
    reference = ws.root / "demo" / "reference_labels"
    reference.mkdir(parents=True)
    (reference / "case_042.nii.gz").write_bytes(b"stale")  # a label of another run's held-out case
    code, err = run(capsys, ws.root, "--fast")
    assert code == 0, err
    assert not (ws.raw / f".{DEMO_DATASET}.tmp").exists()
    folder = ws.raw / DEMO_DATASET
    assert json.loads((folder / SETTINGS_FILE).read_text()) == TINY.record()
    assert sorted(p.name for p in reference.iterdir()) == ["case_005.nii.gz"]
    assert len(list((folder / "imagesTr").iterdir())) == TINY.n_train


def test_missing_reference_labels_are_regenerated(capsys, tmp_path, stub_stages):
    ws = Workspace.at(tmp_path / "ws")
    reference = ws.root / "demo" / "reference_labels"
    folder = generate(ws, TINY, reference)
    label = (reference / "case_005.nii.gz").read_bytes()
    (reference / "case_005.nii.gz").unlink()
    image = (folder / "imagesTs" / "case_005_0000.nii.gz").stat().st_mtime_ns
    code, err = run(capsys, ws.root, "--fast")
    assert code == 0, err
    assert (reference / "case_005.nii.gz").read_bytes() == label
    assert (folder / "imagesTs" / "case_005_0000.nii.gz").stat().st_mtime_ns == image  # the dataset is kept


# ---- stages ----------------------------------------------------------------------------------------------------
def test_all_stages_stubbed_prints_the_summary(capsys, tmp_path, stub_stages):
    code = main(["demo", "--workspace", str(tmp_path / "ws"), "--fast", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "organ1 (large, bright)   0.750" in out and "mean                     0.500" in out
    assert "stage times (s, " in out
    assert "== stage 1/6 generate data: about " in err and "== stage 6/6 overlay: about " in err
    assert stub_stages["train"]["resume"] is False and stub_stages["train"]["device"] == "cpu"
    assert stub_stages["train"]["overrides"]["epochs"] == TINY.epochs


def test_a_second_run_continues_the_training_run(capsys, tmp_path, stub_stages):
    """Without this the trainer refuses a run folder that holds a checkpoint ("continue it with --resume"), an
    option the demo does not have."""
    ws = Workspace.at(tmp_path / "ws")
    assert run(capsys, ws.root, "--fast")[0] == 0
    run_dir = ws.run_dir(DEMO_DATASET, "default", "3d_fullres", "default", 0)
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint_latest.pt").write_bytes(b"")
    assert run(capsys, ws.root, "--fast")[0] == 0
    assert stub_stages["train"]["resume"] is True


STAGE_FAILURES = [  # (stage name, module, function, exception)
    ("generate data", synthetic, "make_synthetic_dataset", OSError(28, "No space left on device", "/x/raw")),
    ("verify, fingerprint, plan, preprocess", pipeline, "plan_and_preprocess", DatasetError("/x: 2 problem(s)")),
    ("train fold 0", training, "train_folds", PlansError("/x/plans.json: plans not found")),
    ("predict held-out cases", predictor, "run_predict", ImageIOError("case 'case_005': cannot be read")),
    ("evaluate", metrics, "evaluate_folder", OSError(13, "Permission denied", "/x/demo/summary.json")),
    ("overlay", demo, "_overlay_first", OSError(5, "Input/output error")),
]


@pytest.mark.parametrize("stage, module, function, error", STAGE_FAILURES, ids=[s[0] for s in STAGE_FAILURES])
def test_a_failing_stage_is_named(capsys, monkeypatch, tmp_path, stub_stages, stage, module, function, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(module, function, fail)
    code, err = run(capsys, tmp_path / "ws", "--fast")
    assert code == 1
    cause = str(error) if not isinstance(error, OSError) else f"{type(error).__name__}: {error}"
    assert f"autoseg demo: error: stage '{stage}' failed: {cause}\n" in err
    assert "run the same command again: the data, preprocessed cases and training run already made under" in err
    assert f"made under {tmp_path / 'ws'} are reused)" in err
    assert "Traceback" not in err


def test_debug_shows_the_stage_traceback(tmp_path, monkeypatch, stub_stages):
    monkeypatch.setattr(training, "train_folds", lambda *a, **k: (_ for _ in ()).throw(PlansError("no plans")))
    with pytest.raises(DemoError, match="stage 'train fold 0' failed: no plans") as exc:
        main(["demo", "--workspace", str(tmp_path / "ws"), "--fast", "--debug"])
    assert isinstance(exc.value.__cause__, PlansError)


def test_a_broken_file_in_the_demo_dataset_stops_verification(capsys, tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    folder = generate(ws, TINY, ws.root / "demo" / "reference_labels")
    label = folder / "labelsTr" / "case_002.nii.gz"
    label.write_bytes(label.read_bytes()[:100])
    code, err = run(capsys, ws.root, "--fast", "--device", "cpu")
    assert code == 1
    assert "autoseg demo: error: stage 'verify, fingerprint, plan, preprocess' failed:" in err
    assert "case_002.nii.gz" in err
    assert not (ws.results / DEMO_DATASET).exists()


def test_augmentation_pipeline_is_chosen_checked_and_recorded(capsys, tmp_path, stub_stages):
    with pytest.raises(ConfigError, match=r"augmentation 'bg' is not registered; known: .*batchgenerators"):
        DemoSettings(augmentation="bg")
    code, err = run(capsys, tmp_path / "ws", "--fast", "--augmentation", "batchgenerators")
    assert code == 0, err
    assert stub_stages["train"]["overrides"]["augmentation"] == "batchgenerators"
    recorded = json.loads((Workspace.at(tmp_path / "ws").raw / DEMO_DATASET / SETTINGS_FILE).read_text())
    assert recorded["augmentation"] == "batchgenerators"
    code, err = run(capsys, tmp_path / "ws", "--fast")  # the default pipeline's model is not the one trained here
    assert code == 1 and "augmentation" in err
