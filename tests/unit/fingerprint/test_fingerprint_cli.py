"""`autoseg fingerprint`: summary, output files, one-line errors."""

from autoseg.cli.main import main


def test_fingerprint_command_writes_and_summarises(synthetic, workspace, capsys):
    synthetic(n_cases=3, shape=(8, 12, 12))
    code = main(["fingerprint", "-d", "999", "-j", "1", "--workspace", str(workspace.root)])
    out = capsys.readouterr().out
    assert code == 0
    assert "Dataset999_Synthetic: 3 cases, median spacing (z,y,x)" in out
    assert "channel CT: foreground p0.5" in out
    assert f"wrote {workspace.fingerprint_file('Dataset999_Synthetic')}" in out
    assert workspace.fingerprint_table("Dataset999_Synthetic").is_file()


def test_fingerprint_command_reports_a_broken_dataset_in_one_line(synthetic, workspace, capsys):
    folder = synthetic(n_cases=2, shape=(8, 12, 12))
    (folder / "labelsTr" / "case_001.nii.gz").unlink()
    code = main(["fingerprint", "-d", "999", "--workspace", str(workspace.root)])
    err = capsys.readouterr().err
    assert code == 1
    assert "case_001.nii.gz: label file is missing" in err and "autoseg verify" in err
    assert "Traceback" not in err


def test_unreadable_case_in_a_worker_is_a_one_line_error(synthetic, workspace, capsys):
    folder = synthetic(n_cases=3, shape=(8, 12, 12))
    bad = folder / "imagesTr" / "case_001_0000.nii.gz"
    bad.write_bytes(b"not an image" * 10)
    code = main(["fingerprint", "-d", "999", "-j", "2", "--workspace", str(workspace.root)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{bad}: cannot be read as an image" in err and "Traceback" not in err
    assert not workspace.fingerprint_file(folder.name).exists()
