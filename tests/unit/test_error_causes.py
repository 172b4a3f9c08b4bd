"""Errors keep their cause: no `raise ... from None` in the package, and `--debug` shows the whole chain."""

from __future__ import annotations

import ast
import traceback
from pathlib import Path

import pytest

import autoseg
from autoseg.cli.main import main
from autoseg.errors import ConfigError


def test_no_error_drops_its_cause():
    dropped = []
    for path in sorted(Path(autoseg.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.cause, ast.Constant) and node.cause.value is None:
                dropped.append(f"{path.name}:{node.lineno}")
    assert dropped == []


def _broken_bundle(tmp_path: Path) -> list[str]:
    model = tmp_path / "model"
    model.mkdir()
    (model / "bundle.json").write_text('{"format_version": 1, "dataset": 4}')  # fields missing, wrong type
    (tmp_path / "in").mkdir()
    return ["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model)]


def test_debug_shows_the_chain_of_causes(tmp_path, capsys):
    argv = _broken_bundle(tmp_path)
    assert main([*argv, "--workspace", str(tmp_path / "ws")]) == 1
    err = capsys.readouterr().err
    assert "bundle.json: invalid bundle description" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="invalid bundle description") as info:
        main([*argv, "--workspace", str(tmp_path / "ws"), "--debug"])
    assert isinstance(info.value.__cause__, ValueError)  # what from_json found wrong, kept for --debug
    printed = "".join(traceback.format_exception(info.value))
    assert "The above exception was the direct cause of the following exception" in printed
