"""Untrusted files: pickled payloads in checkpoints are refused (predict and train --resume) without running them;
zip entries escaping the install folder are refused; plans/dataset JSON of a bundle is validated before use."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from kill_helpers import ENV, autoseg

sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))
sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from fake_model import make_fake_model, write_case  # noqa: E402

from autoseg.bundle import export_bundle  # noqa: E402
from autoseg.cli.main import main  # noqa: E402
from autoseg.workspace import Workspace  # noqa: E402


class Payload:
    """Unpickling this would create the marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _poisoned(path: Path, marker: Path, **extra) -> None:
    state = {"model": {"w": torch.zeros(1)}, "epoch": 1, "evil": Payload(marker), **extra}
    buf = io.BytesIO()
    torch.save(state, buf)
    path.write_bytes(buf.getvalue())


def _cli(argv, capsys) -> tuple[int, str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_predict_refuses_a_pickled_checkpoint(workspace, tmp_path, capsys):
    make_fake_model(workspace, folds=(0,))
    ckpt = workspace.run_dir("Dataset991_Fake", "default", "3d_fullres", "default", 0) / "checkpoint_final.pt"
    marker = tmp_path / "pwned"
    _poisoned(ckpt, marker)
    write_case(tmp_path / "in", "a", (6, 12, 10), (2.0, 1.0, 1.0))
    argv = ["predict", "--workspace", str(workspace.root), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    rc, text = _cli([*argv, "--device", "cpu"], capsys)
    assert rc == 1 and "Traceback" not in text
    assert f"{ckpt}: refused to load: the checkpoint contains pickled Python objects" in text
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_resume_refuses_a_pickled_checkpoint(tmp_path):
    from tiny_run_data import DATASET, make_tiny_dataset

    ws = Workspace.at(tmp_path / "ws")
    make_tiny_dataset(ws)
    run = ws.run_dir(DATASET, "default", "3d_fullres", "default", 0)
    run.mkdir(parents=True)
    marker = tmp_path / "pwned"
    _poisoned(run / "checkpoint_latest.pt", marker)
    cmd = autoseg("train", "-d", "990", "-c", "3d_fullres", "-f", "0", "--workspace", str(ws.root), "--device",
                  "cpu", "-j", "0", "--resume", "--set", "epochs=2")  # fmt: skip
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert "checkpoint_latest.pt: refused to load: the checkpoint contains pickled Python objects" in res.stderr
    assert not marker.exists() and not (run / "checkpoint_final.pt").exists()


@pytest.fixture
def bundle(workspace, tmp_path) -> Path:
    make_fake_model(workspace, folds=(0,))
    return export_bundle(workspace, 991, tmp_path / "model.zip")


def _edit_zip(src: Path, dst: Path, change=None, extra: dict | None = None) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            zout.writestr(item.filename, change(item.filename, data) if change else data)
        for name, data in (extra or {}).items():
            zout.writestr(name, data)
    return dst


@pytest.mark.parametrize("entry", ["../escaped.txt", "models/../../escaped.txt", "/tmp/autoseg_escaped_abs.txt"])
def test_install_refuses_escaping_entries(entry, bundle, workspace, tmp_path, capsys):
    bad = _edit_zip(bundle, tmp_path / "bad.zip", extra={entry: b"x"})
    target = tmp_path / "installed" / "m"
    rc, text = _cli(["install", str(bad), "--to", str(target), "--workspace", str(workspace.root)], capsys)
    assert rc == 1 and "Traceback" not in text
    assert f"entry {entry!r} would be written outside the target folder; refused" in text
    assert not target.exists() and not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "installed").exists() or not any((tmp_path / "installed").iterdir())


def _json_edit(name: str, fn):
    def change(filename: str, data: bytes) -> bytes:
        if filename != name:
            return data
        obj = json.loads(data)
        fn(obj)
        return json.dumps(obj).encode()

    return change


BAD_JSON = [
    ("unknown_key", "plans.json", lambda p: p["configurations"][0].update(surprise=1), r"unknown key 'surprise'"),
    (
        "non_divisible_patch",
        "plans.json",
        lambda p: p["configurations"][0].update(patch_size=[8, 16, 15]),
        r"patch_size \[8, 16, 15\] is not divisible",
    ),
    ("batch_size_string", "plans.json", lambda p: p["configurations"][0].update(batch_size="2"), r"batch_size"),
    ("dataset_num_training", "dataset.json", lambda d: d.update(numTraining="5"), r"numTraining"),
    ("bundle_folds", "bundle.json", lambda b: b.update(models={"3d_fullres": [0, 7]}), r"fold_7/weights.pt"),
]


@pytest.mark.parametrize("case", BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_install_validates_bundle_json(case, bundle, workspace, tmp_path, capsys):
    _, name, fn, words = case
    bad = _edit_zip(bundle, tmp_path / "bad.zip", change=_json_edit(name, fn))
    target = tmp_path / "installed"
    rc, text = _cli(["install", str(bad), "--to", str(target), "--workspace", str(workspace.root)], capsys)
    assert rc == 1 and "Traceback" not in text, text
    import re

    assert re.search(words, text), text
    assert name in text or "weights" in text
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".installed")]
