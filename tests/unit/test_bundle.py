"""Model bundles: export -> install -> predict round trip, zip-slip and pickle refusal, CLI."""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "inference"))
from fake_model import make_fake_model, write_case  # noqa: E402

from autoseg.bundle import export_bundle, install_bundle  # noqa: E402
from autoseg.cli.main import main  # noqa: E402
from autoseg.data.image_io import read_file  # noqa: E402
from autoseg.errors import AutosegError, ConfigError  # noqa: E402
from autoseg.inference.predictor import run_predict  # noqa: E402
from autoseg.inference.source import load_bundle  # noqa: E402
from autoseg.workspace import Workspace  # noqa: E402

DS = "Dataset991_Fake"


@pytest.fixture
def bundle_zip(workspace, tmp_path):
    make_fake_model(workspace, folds=(0, 1))
    return export_bundle(workspace, 991, tmp_path / "model.zip")


def test_round_trip_predicts_identically(workspace, bundle_zip, tmp_path):
    with zipfile.ZipFile(bundle_zip) as zf:
        names = set(zf.namelist())
    assert {"bundle.json", "plans.json", "dataset.json", "fingerprint.json"} <= names
    assert {"models/3d_fullres/fold_0/weights.pt", "models/3d_fullres/fold_1/weights.pt"} <= names
    other = Workspace.at(tmp_path / "elsewhere")
    target = install_bundle(other, bundle_zip)
    assert target == other.results / DS / "bundle"
    src = load_bundle(target)
    assert src.dataset == DS and list(src.weights["3d_fullres"]) == [0, 1]
    inp = tmp_path / "in"
    write_case(inp, "k", (5, 12, 10), (2.5, 0.8, 1.1))
    a = run_predict(workspace, inp, tmp_path / "a", dataset=991, tta=False, device="cpu")
    b = run_predict(other, inp, tmp_path / "b", tta=False, device="cpu")  # found via results/<ds>/bundle
    c = run_predict(workspace, inp, tmp_path / "c", model_dir=target, tta=False, device="cpu")
    ref = read_file(a[0])
    for out in (b, c):
        got = read_file(out[0])
        np.testing.assert_array_equal(got[0], ref[0])
        assert got[1] == ref[1]
    with pytest.raises(ConfigError, match="already exists; remove it, use --force"):
        install_bundle(other, bundle_zip)
    assert install_bundle(other, bundle_zip, force=True) == target
    assert not list(target.parent.glob(".bundle*"))  # no temporary folders left


def _rewrite(src: Path, dst: Path, extra: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, zin.read(item))
        for name, data in extra.items():
            zout.writestr(name, data)
    return dst


@pytest.mark.parametrize("entry", ["../evil.txt", "models/../../evil.txt", "/tmp/evil_abs.txt"])
def test_zip_slip_entries_are_refused(workspace, bundle_zip, tmp_path, entry):
    bad = _rewrite(bundle_zip, tmp_path / "bad.zip", {entry: b"x"})
    with pytest.raises(ConfigError, match="would be written outside the target folder; refused"):
        install_bundle(workspace, bad, to=tmp_path / "inst" / "m")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "inst" / "m").exists()


def test_pickled_weights_are_refused(workspace, bundle_zip, tmp_path):
    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(1), "code": Path("x")}, buf)  # a Python object: needs unpickling of code
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bundle_zip) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = buf.getvalue() if item.filename.endswith("fold_1/weights.pt") else zin.read(item)
            zout.writestr(item, data)
    with pytest.raises(
        ConfigError, match="fold_1/weights.pt: refused to load: the weights file contains pickled Python objects"
    ):
        install_bundle(workspace, bad, to=tmp_path / "inst")
    assert not (tmp_path / "inst").exists()


def test_invalid_plans_in_bundle_are_reported(workspace, bundle_zip, tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bundle_zip) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "plans.json":
                data = data.replace(b'"batch_size": 2', b'"batch_size": "two"')
            zout.writestr(item, data)
    with pytest.raises(AutosegError, match=r"plans.json.*batch_size"):
        install_bundle(workspace, bad, to=tmp_path / "inst")


def test_cli_export_and_install(workspace, tmp_path, capsys):
    make_fake_model(workspace, folds=(0,))
    root = ["--workspace", str(workspace.root)]
    assert main(["export", "-d", "991", "-o", str(tmp_path / "m.zip"), *root]) == 0
    assert main(["install", str(tmp_path / "m.zip"), "--to", str(tmp_path / "inst"), *root]) == 0
    out = capsys.readouterr().out
    assert "bundle written" in out and f"-m {tmp_path / 'inst'}" in out
    assert main(["install", str(tmp_path / "missing.zip"), *root]) == 1
    assert "missing.zip: bundle file not found" in capsys.readouterr().err
