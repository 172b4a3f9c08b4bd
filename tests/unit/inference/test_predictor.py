"""Prediction from raw files: exact output geometry, fold averaging, inputs, --part/--continue, CLI errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_model import make_fake_model, tiny_configuration, write_case

from autoseg.cli.main import main
from autoseg.data.image_io import read_file
from autoseg.data.probabilities import load_probabilities
from autoseg.errors import ConfigError, DatasetError
from autoseg.inference.inputs import list_inputs, parse_part
from autoseg.inference.predictor import Predictor, run_predict
from autoseg.workspace import Workspace

DS = "Dataset991_Fake"


@pytest.fixture
def model(workspace: Workspace):
    make_fake_model(workspace, folds=(0, 1))
    return workspace


def _run(ws, inp, out, **kw):
    kw.setdefault("tta", False)
    return run_predict(ws, inp, out, dataset=991, device="cpu", **kw)


def test_geometry_is_exact_oblique_anisotropic_and_smaller_than_patch(model, tmp_path):
    inp = tmp_path / "in"
    # patch (8, 16, 16) at spacing (2, 1, 1): "small" stays smaller than the patch on every axis after resampling
    write_case(inp, "small", (5, 9, 11), (3.0, 0.7, 0.9), seed=1)
    write_case(inp, "aniso", (7, 33, 20), (4.5, 0.45, 1.7), origin=(-100.0, 20.5, 0.125), seed=2, ending=".mha")
    written = _run(model, inp, tmp_path / "out", save_probabilities=True)
    assert [p.name for p in written] == ["aniso.mha", "small.nii.gz"]  # each output keeps its input's format
    for cid, ending in (("aniso", ".mha"), ("small", ".nii.gz")):
        img, geo_in = read_file(inp / f"{cid}_0000{ending}")
        seg, geo_out = read_file(tmp_path / "out" / f"{cid}{ending}")
        assert seg.shape == img.shape
        assert geo_out.spacing == geo_in.spacing and geo_out.origin == geo_in.origin and geo_out.dim == 3
        # NIfTI stores the direction as a float32 quaternion: each write adds up to ~1e-7 of rounding
        np.testing.assert_allclose(geo_out.direction, geo_in.direction, rtol=0, atol=1e-6)
        assert set(np.unique(seg)) <= {0, 1, 2}
        probs = load_probabilities(tmp_path / "out" / f"{cid}.npz")
        assert probs.shape == (3, *img.shape[1:])
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=3e-3)  # float16 storage
        assert np.mean(np.argmax(probs, 0) == seg[0]) > 0.99  # float16 rounding may flip near-ties
    assert read_file(tmp_path / "out" / "aniso.mha")[1] == read_file(inp / "aniso_0000.mha")[1]  # bit-exact


def test_folds_are_averaged_in_logit_space(model, tmp_path):
    source_cases = tmp_path / "in"
    write_case(source_cases, "c", (6, 12, 14), (2.0, 1.0, 1.0), seed=3)
    from autoseg.inference.source import resolve_source

    src = resolve_source(model, 991)
    both = Predictor(src, "3d_fullres", [0, 1], "cpu", tta=False)
    single = [Predictor(src, "3d_fullres", [f], "cpu", tta=False) for f in (0, 1)]
    data = np.random.default_rng(0).normal(size=(1, 6, 12, 14)).astype(np.float32)
    expected = (single[0].logits(data) + single[1].logits(data)) / 2
    torch.testing.assert_close(both.logits(data), expected, rtol=1e-5, atol=1e-5)
    assert both.folds == (0, 1)
    with pytest.raises(ConfigError, match=r"fold 3 of '3d_fullres' is not trained.*available folds: 0, 1"):
        Predictor(src, "3d_fullres", [3], "cpu")


def test_part_continue_and_single_file_output(model, tmp_path):
    inp = tmp_path / "in"
    for i, cid in enumerate(["a", "b", "c"]):
        write_case(inp, cid, (4, 10, 10), (2.0, 1.0, 1.0), seed=i)
    out = tmp_path / "out"
    assert [p.name for p in _run(model, inp, out, part="2/2", fast=True)] == ["b.nii.gz"]
    assert [p.name for p in _run(model, inp, out, part="1/2", fast=True)] == ["a.nii.gz", "c.nii.gz"]
    before = (out / "a.nii.gz").stat().st_mtime_ns
    assert _run(model, inp, out, resume=True, fast=True) == []  # everything already there
    assert (out / "a.nii.gz").stat().st_mtime_ns == before
    single = _run(model, inp / "b_0000.nii.gz", tmp_path / "one" / "x.nii.gz", fast=True)
    assert single == [tmp_path / "one" / "x.nii.gz"]
    np.testing.assert_array_equal(read_file(single[0])[0], read_file(out / "b.nii.gz")[0])
    with pytest.raises(ConfigError, match="K/N"):
        parse_part("3/2")


def test_missing_channel_file_is_named(workspace, tmp_path, capsys):
    make_fake_model(workspace, channels=2, folds=(0,), configurations=[tiny_configuration(channels=2)])
    inp = tmp_path / "in"
    write_case(inp, "p1", (4, 10, 10), (2.0, 1.0, 1.0), channels=2)
    write_case(inp, "p2", (4, 10, 10), (2.0, 1.0, 1.0), channels=1)
    code = main(["predict", "-i", str(inp), "-o", str(tmp_path / "o"), "--workspace", str(workspace.root)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"case 'p2': channel file {inp / 'p2_0001.nii.gz'} is missing" in err
    assert "_0000 (MR0), _0001 (MR1)" in err
    with pytest.raises(DatasetError, match="single file can only be predicted by a one-channel model"):
        _run(workspace, inp / "p1_0000.nii.gz", tmp_path / "o2")


def test_extra_channel_is_refused(model, tmp_path):
    inp = tmp_path / "in"
    write_case(inp, "q", (4, 10, 10), (2.0, 1.0, 1.0), channels=2)
    from autoseg.inference.source import resolve_source

    with pytest.raises(DatasetError, match=r"q_0001.nii.gz: channel 1 is more than the model takes"):
        list_inputs(inp, resolve_source(model, 991))


def test_predict_without_dataset_lists_trained_datasets(model, tmp_path, capsys):
    make_fake_model(model, name="Dataset992_Other", folds=(0,))
    code = main(["predict", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "--workspace", str(model.root)])
    err = capsys.readouterr().err
    assert code == 1
    assert "several trained datasets (Dataset991_Fake, Dataset992_Other); choose one with -d N" in err


def test_predict_without_dataset_uses_the_only_one_and_prefers_3d_fullres(workspace, tmp_path):
    confs = [tiny_configuration("2d", patch=(16, 16), spacing=(1.0, 1.0)), tiny_configuration()]
    make_fake_model(workspace, configurations=confs, folds=(0,))
    inp = tmp_path / "in"
    geo = write_case(inp, "z", (3, 12, 12), (2.0, 1.0, 1.0))
    from autoseg.inference.predictor import choose_configurations
    from autoseg.inference.source import resolve_source

    assert choose_configurations(resolve_source(workspace), None, False) == (("3d_fullres",), ())
    assert choose_configurations(resolve_source(workspace), "2d", False) == (("2d",), ())
    written = run_predict(workspace, inp, tmp_path / "o", configuration="2d", device="cpu")
    seg, g = read_file(written[0])
    assert seg.shape == (1, 3, 12, 12) and g.spacing == pytest.approx(geo.spacing)
    with pytest.raises(ConfigError, match="--ensemble needs a model selection"):
        run_predict(workspace, inp, tmp_path / "o", ensemble=True, device="cpu")


def test_selected_postprocessing_is_applied_to_the_selected_configuration(model, tmp_path):
    from scipy import ndimage

    from autoseg.evaluation.postprocess import Postprocessing
    from autoseg.evaluation.select import SCHEMA_VERSION, Candidate, Selection

    cand = Candidate(("3d_fullres",), 0.5, {"1": 0.5, "2": 0.5}, "cv")
    sel = Selection(
        SCHEMA_VERSION, DS, "default", "default", ("3d_fullres",), (0, 1), 0.5, Postprocessing(((1, 2),)), (cand,)
    )
    sel.save(model.selection_file(DS))
    inp = tmp_path / "in"
    write_case(inp, "r", (6, 20, 20), (2.0, 1.0, 1.0), seed=5)
    raw = _run(model, inp, tmp_path / "raw", postprocess=False)
    post = _run(model, inp, tmp_path / "post")
    full = np.ones((3, 3, 3))
    n_raw = ndimage.label(read_file(raw[0])[0][0] > 0, full)[1]
    n_post = ndimage.label(read_file(post[0])[0][0] > 0, full)[1]
    assert n_raw > 1 and n_post == 1  # the random network's scattered foreground, reduced to its largest part
    other = _run(model, inp, tmp_path / "other", configuration="3d_fullres", folds=[0])
    assert other  # -c equal to the selection's winner: postprocessing still applies
    assert ndimage.label(read_file(other[0])[0][0] > 0, full)[1] == 1
