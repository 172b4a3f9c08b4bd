"""dataset.json's numTraining must equal the cases in imagesTr: verify, fingerprint and preprocess refuse a mismatch
with one shared message (dataset.json, the value, the count, imagesTr, how to fix it) and write nothing."""

from __future__ import annotations

import pytest
from hostile_corpus import NAME, add_case, edit_json

from autoseg.cli.main import main
from autoseg.data.dataset import check_num_training, load_dataset, num_training_problem
from autoseg.data.verify import verify_dataset
from autoseg.errors import DatasetError
from autoseg.planning.plans import Plans
from autoseg.preprocessing.preprocess import preprocess_dataset


def expected(folder, given: int, found: int) -> str:
    return (
        f"{folder / 'dataset.json'}: numTraining is {given} but {found} cases were found in {folder / 'imagesTr'}; "
        f"fix numTraining in dataset.json (set it to {found} if these are all the training cases) and run "
        "`autoseg verify` to check the dataset"
    )


def outputs(ws) -> list[str]:
    """Every path (files, folders, locks, temporary files) under preprocessed/ and results/."""
    roots = [r for r in (ws.preprocessed, ws.results) if r.is_dir()]
    return sorted(str(p.relative_to(ws.root)) for r in roots for p in r.rglob("*"))


def cli(ws, command: str, capsys) -> tuple[int, str]:
    jobs = ["-j", "1"] if command != "plan" else []
    rc = main([command, "--workspace", str(ws.root), "-d", "999", *jobs])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_one_message_shared_by_verify_and_the_library(workspace, synthetic):
    folder = synthetic(n_cases=3, shape=(8, 10, 12), ct=False)
    spec = load_dataset(folder)
    assert num_training_problem(spec) is None and num_training_problem(spec, 3) is None
    check_num_training(spec)  # equal: no error
    edit_json(folder, numTraining=5)
    spec = load_dataset(folder)
    assert num_training_problem(spec) == expected(folder, 5, 3)
    with pytest.raises(DatasetError) as err:
        check_num_training(spec)
    assert str(err.value) == expected(folder, 5, 3)
    assert verify_dataset(folder, jobs=1).problems == (expected(folder, 5, 3),)


@pytest.mark.parametrize(
    "damage, given, found",
    [(lambda f: edit_json(f, numTraining=5), 5, 3), (lambda f: add_case(f, "case_009"), 3, 4)],
    ids=["declared_too_many", "case_added"],
)
def test_fingerprint_refuses_and_writes_nothing(damage, given, found, workspace, synthetic, capsys):
    folder = synthetic(n_cases=3, shape=(8, 10, 12), ct=False)
    damage(folder)
    rc, text = cli(workspace, "fingerprint", capsys)
    assert rc == 1
    assert text.strip() == f"autoseg fingerprint: error: {expected(folder, given, found)}"
    assert "Traceback" not in text and "warning" not in text.lower()
    assert not workspace.fingerprint_file(NAME).exists() and not workspace.fingerprint_table(NAME).exists()
    assert outputs(workspace) == []


def test_preprocess_refuses_and_writes_nothing(workspace, synthetic, capsys):
    folder = synthetic(n_cases=3, shape=(8, 10, 12), ct=False)
    for command in ("fingerprint", "plan"):
        assert cli(workspace, command, capsys)[0] == 0
    before = outputs(workspace)
    names = ("", "/fingerprint.json", "/fingerprint_cases.csv", "/plans.json")
    assert before == [f"preprocessed/{NAME}{n}" for n in names]
    edit_json(folder, numTraining=2)
    rc, text = cli(workspace, "preprocess", capsys)
    assert rc == 1
    assert text.strip() == f"autoseg preprocess: error: {expected(folder, 2, 3)}"
    assert outputs(workspace) == before  # no configuration folder, no gt_segmentations, no lock, no temp file
    plans = Plans.load(workspace.plans_file(NAME))
    with pytest.raises(DatasetError, match=r"numTraining is 2 but 3 cases were found"):
        preprocess_dataset(workspace, NAME, plans, ["3d_fullres"], jobs=1)
    assert outputs(workspace) == before
    edit_json(folder, numTraining=3)  # fixed: the same command now works
    assert cli(workspace, "preprocess", capsys)[0] == 0
