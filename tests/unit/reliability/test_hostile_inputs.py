"""Hostile inputs: every command that reads a broken dataset fails with one message naming the file and the defect,
without a traceback and without leaving partial output; odd but valid inputs (non-ASCII names, id prefixes, a
1-voxel-thick or 1000 x 1000 x 1 image) work."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_corpus import CASES, NAME, WORKING, build

from autoseg.cli.main import main
from autoseg.preprocessing.pipeline import plan_and_preprocess
from autoseg.workspace import Workspace

COMMANDS = ("verify", "fingerprint", "plan_and_preprocess", "preprocess")
# defects every command reports with verify's own words (one shared message), not only verify
SAME_MESSAGE = {"count_mismatch", "count_too_low", "count_case_added"}


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """Per base: a workspace whose dataset is fully planned and preprocessed (a complete previous state)."""
    out = {}
    for base in ("nii", "nii2ch", "mha"):
        ws = Workspace.at(tmp_path_factory.mktemp(f"tpl_{base}") / "ws")
        ws.raw.mkdir(parents=True)
        build(ws.raw, base)
        plan_and_preprocess(ws, "999", jobs=1)
        out[base] = ws
    return out


def fresh(templates, base: str, tmp_path: Path) -> Workspace:
    """Copy of a template workspace in which case_001 is not preprocessed yet (so preprocess must read it)."""
    ws = Workspace.at(tmp_path / "ws")
    shutil.copytree(templates[base].root, ws.root, symlinks=True)
    for p in ws.preprocessed_dataset(NAME).rglob("case_001*"):
        p.unlink()
    return ws


def snapshot(ws: Workspace) -> dict[str, bytes]:
    roots = [ws.preprocessed, ws.results]
    return {
        str(p.relative_to(ws.root)): p.read_bytes()
        for r in roots
        if r.is_dir()
        for p in sorted(r.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out + out.err


def assert_clear_failure(rc: int, text: str, offending: Path, words: str | None) -> None:
    assert rc != 0, text
    assert "Traceback" not in text, text
    assert str(offending) in text or offending.name in text, f"{offending} not named in:\n{text}"
    if words:
        lines = [line for line in text.splitlines() if offending.name in line]
        assert any(re.search(words, line) for line in lines), f"{words!r} not in:\n{text}"
    error = text.strip().split("\n\n")
    assert len(error) == 1 and len(text.strip().splitlines()) <= 12, f"not one paragraph:\n{text}"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_command_refuses_a_broken_dataset(case, templates, tmp_path, capsys):
    cid, base, damage, rel, words = case
    ws = fresh(templates, base, tmp_path)
    folder = ws.raw_dataset(NAME)
    damage(folder)
    for command in COMMANDS:
        before = snapshot(ws)
        rc, text = run_cli([command, "--workspace", str(ws.root), "-d", "999", "-j", "1"], capsys)
        assert_clear_failure(rc, text, folder / rel, words if command == "verify" or cid in SAME_MESSAGE else None)
        assert snapshot(ws) == before, f"{command} changed the workspace"
        assert not [p for p in ws.root.rglob(".*.tmp*")], "temporary files left behind"


@pytest.mark.parametrize("name", ["truncated_gz_tail", "nan_in_image", "label_undeclared"])
@pytest.mark.parametrize("command", ["fingerprint", "preprocess"])
def test_subprocess_with_workers(name, command, templates, tmp_path):
    _, base, damage, rel, words = next(c for c in CASES if c[0] == name)
    ws = fresh(templates, base, tmp_path)
    damage(ws.raw_dataset(NAME))
    before = snapshot(ws)
    cmd = [sys.executable, "-m", "autoseg", command, "--workspace", str(ws.root), "-d", "999", "-j", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "AUTOSEG_NO_PROGRESS": "1"})
    assert_clear_failure(res.returncode, res.stdout + res.stderr, ws.raw_dataset(NAME) / rel, words)
    assert snapshot(ws) == before


def test_debug_shows_the_traceback(templates, tmp_path):
    ws = fresh(templates, "nii", tmp_path)
    (ws.raw_dataset(NAME) / "imagesTr" / "case_001_0000.nii.gz").write_bytes(b"")
    cmd = [sys.executable, "-m", "autoseg", "fingerprint", "--workspace", str(ws.root), "-d", "999", "--debug"]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "AUTOSEG_NO_PROGRESS": "1"})
    assert res.returncode != 0 and "Traceback" in res.stderr and "file is empty (0 bytes)" in res.stderr


@pytest.mark.parametrize("case", WORKING, ids=[c[0] for c in WORKING])
def test_odd_but_valid_datasets_work(case, tmp_path, capsys):
    _, base, change = case
    ws = Workspace.at(tmp_path / "ws")
    ws.raw.mkdir(parents=True)
    folder = build(ws.raw, base)
    change(folder)
    for command in ("verify", "fingerprint", "plan_and_preprocess"):
        rc, text = run_cli([command, "--workspace", str(ws.root), "-d", "999", "-j", "1"], capsys)
        assert rc == 0, text
    ids = sorted(p.name[: -len("_0000.nii.gz")] for p in (folder / "imagesTr").iterdir())
    data = sorted(p for p in ws.preprocessed_dataset(NAME).iterdir() if p.is_dir() and p.name != "gt_segmentations")
    assert data
    for d in data:
        assert sorted(p.stem for p in d.glob("*.json") if not p.name.startswith(".")) == ids
    gt = sorted(p.name for p in ws.gt_folder(NAME).iterdir())
    assert gt == sorted(f"{i}.nii.gz" for i in ids)
