import subprocess
import sys

import pytest

from autoseg.cli.common import parse_folds, parse_set
from autoseg.errors import ConfigError


@pytest.mark.parametrize(
    "tokens, expected",
    [
        ("0..4", [0, 1, 2, 3, 4]),
        (["0", "2", "4"], [0, 2, 4]),
        ("all", ["all"]),
        (["1..2", "4"], [1, 2, 4]),
        ("0,3", [0, 3]),
        (["2", "2"], [2]),
    ],
)
def test_parse_folds(tokens, expected):
    assert parse_folds(tokens) == expected


@pytest.mark.parametrize(
    "tokens, message",
    [("5", "fold 5 does not exist"), ("a", "is not a number"), ("3..1", "must look like 0..4"), ([], "no fold given")],
)
def test_parse_folds_errors(tokens, message):
    with pytest.raises(ConfigError, match=message):
        parse_folds(tokens)


def test_parse_set():
    assert parse_set(["epochs=100", "lr=0.005", "loss=dice_ce", "x=[1,2]"]) == {
        "epochs": 100,
        "lr": 0.005,
        "loss": "dice_ce",
        "x": [1, 2],
    }
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set(["epochs"])


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "autoseg", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("verify", "fingerprint", "convert_msd", "plan", "preprocess", "plan_and_preprocess", "demo"):
        assert cmd in out.stdout


def test_help_shows_only_defaults_that_say_something(capsys):
    from autoseg.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["benchmark", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "(default: 20)" in text  # --iterations: a real default is shown once
    assert text.count("cuda when available") == 1 and "available) (default" not in text
