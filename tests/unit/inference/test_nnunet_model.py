"""Predicting with nnU-Net model folders: geometry, mirror axes, folds, ensembles, zips, postprocessing, CLI."""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from dataclasses import fields

import numpy as np
import pytest
import torch
from fake_model import write_case
from nnunet_folder import configuration, write_model_folder

from autoseg.cli.main import main
from autoseg.data.image_io import read_file
from autoseg.data.probabilities import probabilities_to_labels
from autoseg.errors import ConfigError
from autoseg.evaluation.postprocess import apply_postprocessing
from autoseg.inference import predictor as predictor_module
from autoseg.inference.export import restore_probabilities, restored_argmax
from autoseg.inference.nnunet_predict import run_predict_nnunet
from autoseg.inference.nnunet_source import load_nnunet_model
from autoseg.inference.predictor import Predictor
from autoseg.inference.sliding_window import NNUNET_NUMERICS, nnunet_gaussian, sliding_window_logits, tile_positions
from autoseg.planning.plans import Configuration
from autoseg.preprocessing.resample import resample_data, separate_z_axis


@pytest.fixture
def cases(tmp_path):
    inp = tmp_path / "in"
    write_case(inp, "a", (14, 20, 18), (1.0, 1.0, 1.0), seed=1)
    write_case(inp, "b", (10, 12, 22), (1.0, 0.5, 2.0), origin=(-4.0, 2.5, 9.0), seed=2)
    return inp


def _labels(path):
    return read_file(path)[0][0]


def test_outputs_keep_the_input_geometry_with_transpose_and_resampling(tmp_path, cases):
    conf = configuration(spacing=(1.0, 0.8, 1.2))
    folder = write_model_folder(tmp_path / "m", conf=conf, transpose=(2, 0, 1), folds=(0, 1))
    written = run_predict_nnunet(cases, tmp_path / "out", [folder], tta=False, device="cpu", backend="torch")
    assert [p.name for p in written] == ["a.nii.gz", "b.nii.gz"]
    for cid in ("a", "b"):
        img, geo_in = read_file(cases / f"{cid}_0000.nii.gz")
        seg, geo_out = read_file(tmp_path / "out" / f"{cid}.nii.gz")
        assert seg.shape[1:] == img.shape[1:]
        assert np.allclose(geo_out.spacing, geo_in.spacing) and np.allclose(geo_out.origin, geo_in.origin)
        assert np.allclose(geo_out.direction, geo_in.direction)
        assert set(np.unique(seg)) <= {0, 1, 2}


def test_files_match_the_predictor_with_both_folds_averaged(tmp_path, cases):
    folder = write_model_folder(tmp_path / "m", folds=(0, 1))
    run_predict_nnunet(cases, tmp_path / "out", [folder], tta=False, device="cpu", backend="torch")
    model = load_nnunet_model(folder)
    pred = Predictor(model.source, "3d_fullres", None, "cpu", 0.5, False)
    assert pred.folds == (0, 1)
    img, geo = read_file(cases / "a_0000.nii.gz")
    expected = pred.probabilities(img, geo).argmax(0)
    assert np.array_equal(_labels(tmp_path / "out" / "a.nii.gz"), expected)
    one = Predictor(model.source, "3d_fullres", [1], "cpu", 0.5, False).probabilities(img, geo).argmax(0)
    assert not np.array_equal(one, expected)  # the folds' weights differ, so averaging them shows


def test_mirror_axes_come_from_the_checkpoint(tmp_path, monkeypatch):
    seen = []
    real = predictor_module.sliding_window_logits

    def spy(*args, **kw):
        seen.append(tuple(kw["mirror_axes"]))
        return real(*args, **kw)

    monkeypatch.setattr(predictor_module, "sliding_window_logits", spy)
    data = np.random.default_rng(0).normal(size=(1, 16, 16, 16)).astype(np.float32)
    for axes, expected in (((1, 2), (1, 2)), (None, ()), ((0, 1, 2), (0, 1, 2))):
        folder = write_model_folder(tmp_path / str(axes), mirror_axes=axes)
        model = load_nnunet_model(folder)
        Predictor(model.source, "3d_fullres", None, "cpu", 0.5, tta=True).logits(data)
        assert seen[-1] == expected
    Predictor(model.source, "3d_fullres", None, "cpu", 0.5, tta=False).logits(data)
    assert seen[-1] == ()


def test_configuration_ensemble_averages_probabilities(tmp_path, cases):
    full = write_model_folder(tmp_path / "m", seed=1)
    flat = write_model_folder(tmp_path / "m", "2d", configuration(2, (16, 16), (1.0, 1.0)), mirror_axes=(0, 1))
    run_predict_nnunet(cases, tmp_path / "out", [full, flat], tta=False, device="cpu", backend="torch")
    img, geo = read_file(cases / "b_0000.nii.gz")
    probs = [
        Predictor(m.source, m.configuration, None, "cpu", 0.5, False).probabilities(img, geo)
        for m in (load_nnunet_model(full), load_nnunet_model(flat))
    ]
    assert np.array_equal(_labels(tmp_path / "out" / "b.nii.gz"), ((probs[0] + probs[1]) / 2).argmax(0))


def test_missing_fold_and_incompatible_ensemble_are_named(tmp_path, cases):
    folder = write_model_folder(tmp_path / "m")
    with pytest.raises(ConfigError, match="fold 3 has no checkpoint_final.pth"):
        run_predict_nnunet(cases, tmp_path / "out", [folder], folds=[3], device="cpu")
    assert list(load_nnunet_model(folder, ["0"]).source.weights["3d_fullres"]) == [0]  # "0" names fold 0, as 0 does
    other = dict(json.loads((folder / "dataset.json").read_text()), labels={"background": 0, "x": 1})
    second = write_model_folder(
        tmp_path / "n", "2d", configuration(2, (16, 16), (1.0, 1.0)), (0,), (0, 1), dataset=other
    )
    with pytest.raises(ConfigError, match="labels .* differ"):
        run_predict_nnunet(cases, tmp_path / "out", [folder, second], device="cpu")
    assert not (tmp_path / "out").exists()


def _zip(folder, path, extra=()):
    with zipfile.ZipFile(path, "w") as zf:
        for f in folder.rglob("*"):
            if f.is_file():  # paths relative to nnUNet_results, as nnUNetv2_export_model_to_zip writes them
                zf.write(f, f.relative_to(folder.parent.parent))
        for name, data in extra:
            zf.writestr(name, data)
    return path


def test_zip_gives_the_same_output_and_zip_slip_is_refused(tmp_path, cases):
    folder = write_model_folder(tmp_path / "m")
    run_predict_nnunet(cases, tmp_path / "dir", [folder], tta=False, device="cpu", backend="torch")
    archive = _zip(folder, tmp_path / "model.zip")
    run_predict_nnunet(cases, tmp_path / "zip", [archive], tta=False, device="cpu", backend="torch")
    for cid in ("a", "b"):
        assert np.array_equal(_labels(tmp_path / "dir" / f"{cid}.nii.gz"), _labels(tmp_path / "zip" / f"{cid}.nii.gz"))
    evil = _zip(folder, tmp_path / "evil.zip", [("../../escaped.txt", "x"), ("/abs.txt", "y")])
    with pytest.raises(ConfigError, match=r"evil.zip: refused: 2 member\(s\).*\.\./\.\./escaped.txt"):
        run_predict_nnunet(cases, tmp_path / "z2", [evil], device="cpu")
    assert not list(tmp_path.parent.rglob("escaped.txt")) and not (tmp_path / "z2").exists()
    write_model_folder(tmp_path / "m", "2d", configuration(2, (16, 16), (1.0, 1.0)), mirror_axes=(0, 1))
    two = _zip(folder.parent, tmp_path / "two.zip")  # the dataset folder with two trained-model folders
    with pytest.raises(ConfigError, match=r"two.zip: holds 2 trained-model folders \(nnUNetTrainer__nnUNetPlans__2d, "):
        run_predict_nnunet(cases, tmp_path / "z3", [two], device="cpu")


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_postprocessing_json_is_applied_and_the_pickle_never_loaded(tmp_path, cases, autoseg_log):
    folder = write_model_folder(tmp_path / "m")
    run_predict_nnunet(cases, tmp_path / "plain", [folder], tta=False, device="cpu", backend="torch")
    marker = tmp_path / "payload_ran"
    cv = folder / "crossval_results_folds_0"
    cv.mkdir()
    (cv / "postprocessing.pkl").write_bytes(pickle.dumps(Payload(marker)))
    with autoseg_log.at_level(logging.WARNING, logger="autoseg"):
        run_predict_nnunet(cases, tmp_path / "pkl", [folder], tta=False, device="cpu", backend="torch")
    assert not marker.exists()
    assert "postprocessing.pkl (crossval_results_folds_0) is never unpickled" in autoseg_log.text
    assert np.array_equal(_labels(tmp_path / "plain" / "a.nii.gz"), _labels(tmp_path / "pkl" / "a.nii.gz"))
    pp = {"postprocessing_fns": ["remove_all_but_largest_component_from_segmentation"] * 2,
          "postprocessing_kwargs": [{"labels_or_regions": [1, 2]}, {"labels_or_regions": 2}]}  # fmt: skip
    (cv / "postprocessing.json").write_text(json.dumps(pp))
    assert load_nnunet_model(folder).postprocessing == ((1, 2), (2,))
    run_predict_nnunet(cases, tmp_path / "pp", [folder], tta=False, device="cpu", backend="torch")
    for cid in ("a", "b"):
        raw = _labels(tmp_path / "plain" / f"{cid}.nii.gz")
        assert np.array_equal(_labels(tmp_path / "pp" / f"{cid}.nii.gz"), apply_postprocessing(raw, ((1, 2), (2,))))
    run_predict_nnunet(cases, tmp_path / "nopp", [folder], tta=False, device="cpu", postprocess=False)
    assert np.array_equal(_labels(tmp_path / "nopp" / "a.nii.gz"), _labels(tmp_path / "plain" / "a.nii.gz"))
    pp["postprocessing_fns"][0] = "my_pp"
    (cv / "postprocessing.json").write_text(json.dumps(pp))
    with pytest.raises(ConfigError, match="postprocessing function 'my_pp' is not supported"):
        load_nnunet_model(folder)


def test_cli(tmp_path, cases, capsys):
    folder = write_model_folder(tmp_path / "m", folds=(0, 1))
    args = ["predict", "-i", str(cases), "-o", str(tmp_path / "out"), "--nnunet-model", str(folder)]
    assert main(args + ["-f", "1", "--disable-tta", "--device", "cpu", "--backend", "torch"]) == 0
    assert "2 segmentation(s) written" in capsys.readouterr().out
    assert main(args + ["-d", "4", "-c", "3d_fullres"]) == 1
    assert "--nnunet-model: leave out -d, -c" in capsys.readouterr().err


def test_class_by_class_export_gives_the_labels_of_the_full_probabilities(tmp_path, cases):
    full = write_model_folder(tmp_path / "m", conf=configuration(spacing=(1.3, 0.7, 1.0)), transpose=(1, 0, 2))
    flat = write_model_folder(tmp_path / "m", "2d", configuration(2, (16, 16), (0.6, 1.4)), mirror_axes=(0, 1))
    img, geo = read_file(cases / "b_0000.nii.gz")
    members = [
        Predictor(m.source, m.configuration, None, "cpu", 0.5, False).network_output(img, geo)
        for m in (load_nnunet_model(full), load_nnunet_model(flat))
    ]
    probs, props, conf = members[1]
    tied = probs.copy()
    tied[0], tied[2] = 0.0, tied[1]  # exact ties between labels 1 and 2 everywhere: the lower label wins
    for group in ([members[0]], members, [(tied, props, conf)]):
        expected = probabilities_to_labels(sum(restore_probabilities(*m) for m in group) / len(group))
        for threads in (1, 2, 5):  # classes restored one at a time or in parallel: the same labels
            got = restored_argmax(group, threads)
            assert got.dtype == expected.dtype and np.array_equal(got, expected)
    assert 1 in got and 2 not in got


def test_export_of_nnunet_models_follows_the_resampled_logits(tmp_path, cases):
    """nnU-Net resamples logits, then softmax and argmax: the export of an nnU-Net configuration gives exactly
    that argmax (and that softmax), from the softmax probabilities the predictor hands over."""
    folder = write_model_folder(tmp_path / "m", conf=configuration(spacing=(1.7, 0.6, 1.3)), transpose=(1, 0, 2))
    img, geo = read_file(cases / "b_0000.nii.gz")
    model = load_nnunet_model(folder)
    _, props, conf = Predictor(model.source, "3d_fullres", None, "cpu", 0.5, False).network_output(img, geo)
    assert conf.log_space_export and props.shape_after_resample != props.shape_after_crop
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (3, *props.shape_after_resample)).astype(np.float32)
    probs = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    rs, axis = (
        conf.resampling,
        separate_z_axis(props.target_spacing, props.spacing, conf.resampling.anisotropy_threshold),
    )
    back = np.stack([resample_data(logits[k : k + 1], props.shape_after_crop, axis, rs.order_probabilities,
                                   rs.order_z)[0] for k in range(3)])  # fmt: skip
    inv = [props.transpose.index(i) for i in range(3)]
    box = tuple(slice(lo, hi) for lo, hi in props.bbox)
    expected = np.zeros(props.shape_before_crop, dtype=np.uint8)
    expected[box] = back.argmax(0).transpose(inv)
    member = (probs, props, conf)
    assert np.array_equal(restored_argmax([member]), expected)
    soft = np.exp(back - back.max(0)) / np.exp(back - back.max(0)).sum(0)
    assert np.allclose(restore_probabilities(*member)[(slice(None), *box)], soft.transpose(0, *(a + 1 for a in inv)),
                       atol=1e-5)  # fmt: skip
    plain = (probs, props, replace_config(conf))
    assert not np.array_equal(restored_argmax([plain]), expected)  # resampling probabilities would differ here


def replace_config(conf) -> Configuration:
    """The same configuration as a plain autoseg Configuration (probabilities resampled as they are)."""
    return Configuration(**{f.name: getattr(conf, f.name) for f in fields(Configuration)})


def test_nnunet_numerics_float16_gaussian_and_sums():
    """nnU-Net 2.x weights tiles with a float16 Gaussian (maximum 10 at voxel p // 2) and sums them in float16."""
    g = nnunet_gaussian((8, 6))
    assert g.dtype == torch.float16 and float(g.max()) == 10.0 and bool((g > 0).all())
    assert tuple(int(i) for i in np.unravel_index(int(g.float().argmax()), (8, 6))) == (4, 3)  # p // 2, not 3.5
    assert float(g[3, 3]) == float(g[5, 3]) and float(g[3, 3]) < float(g[4, 3])
    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    image = torch.randn(1, 11, 6) * 30
    with torch.no_grad():
        out = sliding_window_logits(net, image, (8, 6), 0.5, (), device="cpu", use_gaussian=NNUNET_NUMERICS)
        acc, norm = torch.zeros((2, 11, 6), dtype=torch.float16), torch.zeros((11, 6), dtype=torch.float16)
        for start in tile_positions((11, 6), (8, 6), 0.5)[0]:  # tiles at 0 and 3: they overlap
            acc[:, start : start + 8] += net(image[None, :, start : start + 8])[0] * g
            norm[start : start + 8] += g
    assert out.dtype == torch.float32 and torch.equal(out, (acc / norm).float())
