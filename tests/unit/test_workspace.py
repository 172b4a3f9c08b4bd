from pathlib import Path

import pytest

from autoseg.errors import WorkspaceError
from autoseg.workspace import Workspace


def test_nnunet_output_folders_are_never_used(tmp_path):
    env = {"nnUNet_preprocessed": str(tmp_path / "nnpre"), "nnUNet_results": str(tmp_path / "nnres")}
    ws = Workspace.from_env(str(tmp_path / "flag"), env)
    assert ws.preprocessed == tmp_path / "flag" / "preprocessed"
    assert ws.results == tmp_path / "flag" / "results"
    ws = Workspace.from_env(
        None, {**env, "AUTOSEG_PREPROCESSED": str(tmp_path / "p"), "AUTOSEG_RESULTS": str(tmp_path / "r")}
    )
    assert (ws.preprocessed, ws.results) == (tmp_path / "p", tmp_path / "r")


def test_workspace_precedence(tmp_path):
    env = {"AUTOSEG_HOME": str(tmp_path / "home"), "nnUNet_raw": str(tmp_path / "nnraw")}
    ws = Workspace.from_env(None, env)
    assert ws.root == tmp_path / "home" and ws.root_source == "AUTOSEG_HOME"
    assert ws.raw == tmp_path / "nnraw"  # nnU-Net's variable honoured when ours is unset
    assert ws.preprocessed == tmp_path / "home" / "preprocessed"
    ws = Workspace.from_env(str(tmp_path / "flag"), {**env, "AUTOSEG_RAW": str(tmp_path / "ours")})
    assert ws.root == tmp_path / "flag" and ws.raw == tmp_path / "ours"
    ws = Workspace.from_env(None, {})
    assert ws.root_source == "default" and ws.root == Path("~/autoseg_workspace").expanduser()


@pytest.fixture
def ws(tmp_path):
    ws = Workspace.at(tmp_path)
    for sub in (
        "raw/Dataset004_Hippocampus",
        "preprocessed/Dataset004_Hippocampus",
        "raw/Dataset012_Liver",
        "results/Dataset112_Other",
    ):
        (tmp_path / sub).mkdir(parents=True)
    return ws


@pytest.mark.parametrize("ident", ["4", "004", 4, "Dataset004_Hippocampus"])
def test_resolve_forms(ws, ident):
    assert ws.resolve(ident) == "Dataset004_Hippocampus"


def test_resolve_results_only(ws):
    assert ws.resolve("112") == "Dataset112_Other"


def test_resolve_missing_lists_existing(ws):
    with pytest.raises(WorkspaceError) as err:
        ws.resolve(7)
    msg = str(err.value)
    assert "no dataset matches '7'" in msg
    assert "Dataset004_Hippocampus, Dataset012_Liver, Dataset112_Other" in msg


def test_resolve_ambiguous(ws, tmp_path):
    (tmp_path / "raw" / "Dataset004_Other").mkdir()
    with pytest.raises(WorkspaceError, match="ambiguous: Dataset004_Hippocampus, Dataset004_Other"):
        ws.resolve("4")


def test_resolve_garbage(ws):
    with pytest.raises(WorkspaceError, match="neither a number"):
        ws.resolve("hippo")


def test_paths(ws, tmp_path):
    assert ws.plans_file("D", "bs4") == tmp_path / "preprocessed" / "D" / "plans_bs4.json"
    assert ws.run_dir("D", "default", "2d", "default", 3) == tmp_path / "results/D/default/2d/default/fold_3"
