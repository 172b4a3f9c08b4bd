"""A tiny dataset re-described as regions, with part of every case marked `ignore`, trained end to end: the network
has one output per region, the sampler never centres a patch on the ignore label, the end-of-fold validation goes
through regions_class_order and scores per region with the ignored voxels left out."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from tiny_run import quick_config
from tiny_run_data import DATASET, make_tiny_dataset

from autoseg.data.image_io import read_label, write_label
from autoseg.fingerprint.fingerprint import DatasetFingerprint
from autoseg.preprocessing import storage
from autoseg.training.checkpoint import load_checkpoint
from autoseg.training.sampling import PatchSampler, _foreground_voxel
from autoseg.training.trainer import train_fold
from autoseg.workspace import Workspace

IGNORE = 3
REGION_LABELS = {"background": 0, "whole": [1, 2], "inner": [2], "ignore": IGNORE}


def _sparse(ws: Workspace, plans) -> list[str]:
    """Mark slices 0-3 of every case `ignore` (preprocessed seg, its locations, and the gt file); -> case ids."""
    folder = ws.preprocessed_config(DATASET, plans.configurations[0].data_identifier)
    ids = storage.list_cases(folder)
    for cid in ids:
        case = storage.load_case(folder, cid, mmap=False)
        seg = np.array(case.seg)
        seg[:, :4] = IGNORE
        locs = {v: np.argwhere(seg[0] == v).astype(np.int32) for v in (1, 2, IGNORE) if (seg[0] == v).any()}
        storage.save_case(folder, storage.PreprocessedCase(case.data, seg, case.properties, locs))
        gt_path = ws.gt_folder(DATASET) / f"{cid}.nii.gz"
        gt, geo = read_label(gt_path)
        gt[:4] = IGNORE
        write_label(gt_path, gt, geo)
    return ids


@pytest.fixture(scope="module")
def regions_ws(tmp_path_factory):
    ws = Workspace.at(tmp_path_factory.mktemp("regions") / "ws")
    plans = make_tiny_dataset(ws)
    ids = _sparse(ws, plans)
    fp = DatasetFingerprint.load(ws.fingerprint_file(DATASET))
    fp = dataclasses.replace(fp, labels=REGION_LABELS, regions_class_order=(1, 2))
    fp.save(ws.fingerprint_file(DATASET))
    return ws, plans, ids


def test_foreground_voxel_never_picks_the_ignore_label_and_unites_region_values():
    rng = np.random.default_rng(0)
    locations = {1: np.array([[0, 0, 1]]), 2: np.array([[0, 0, 2]]), IGNORE: np.array([[0, 0, 3]] * 50)}
    default = {int(_foreground_voxel(locations, rng)[2]) for _ in range(200)}
    assert default == {1, 2, 3}  # without classes every stored label > 0 is foreground
    plain = {int(_foreground_voxel(locations, rng, ((1,), (2,)))[2]) for _ in range(200)}
    assert plain == {1, 2}
    region = [int(_foreground_voxel(locations, rng, ((1, 2),))[2]) for _ in range(400)]
    assert set(region) == {1, 2} and 120 < region.count(1) < 280  # one class: the union of both values' locations
    assert _foreground_voxel({IGNORE: locations[IGNORE]}, rng, ((1, 2),)) is None  # only ignore: a random patch


def test_sampler_centres_forced_patches_on_annotated_voxels(regions_ws):
    ws, plans, ids = regions_ws
    folder = ws.preprocessed_config(DATASET, plans.configurations[0].data_identifier)
    sampler = PatchSampler(folder, ids, (1, 1, 1), 1.0, classes=((1, 2), (2,)))
    rng = np.random.default_rng(3)
    for _ in range(20):
        _, seg = sampler.sample(rng, 4)
        assert set(np.unique(seg).tolist()) <= {1, 2}  # 1-voxel patches at the chosen location: never 0 or ignore


def test_regions_with_ignore_train_validate_and_score_per_region(regions_ws):
    ws, plans, _ = regions_ws
    cfg = dataclasses.replace(quick_config(epochs=1, iterations=2), validate_at_end=True)
    result = train_fold(ws, DATASET, plans, "3d_fullres", 0, cfg, device="cpu", num_workers=0)
    ckpt = load_checkpoint(result.final_checkpoint)
    assert ckpt["num_classes"] == 2  # one sigmoid output per region, none for background or ignore
    heads = [v for k, v in ckpt["model"].items() if "heads" in k and k.endswith(".weight")]
    assert heads and all(isinstance(h, torch.Tensor) and h.shape[0] == 2 for h in heads)
    summary = result.validation
    assert summary["labels"] == ["1,2", "2"] and set(summary["mean"]) == {"1,2", "2"}
    assert np.isfinite(summary["mean_dice"])
    val = ws.run(DATASET, plans.name, "3d_fullres", "default", 0).validation
    preds = sorted(val.glob("*.nii.gz"))
    assert preds
    for p in preds:
        assert set(np.unique(read_label(p)[0]).tolist()) <= {0, 1, 2}  # regions_class_order values only
    rows = (val / "metrics_per_case.csv").read_text().splitlines()
    assert rows[0].startswith("case,label,dice")
    n_ref = [float(r.split(",")[-2]) for r in rows[1:]]
    gt_sizes = []
    for p in preds:
        gt = read_label(ws.gt_folder(DATASET) / p.name)[0]
        gt_sizes += [int(np.isin(gt, (1, 2)).sum()), int((gt == 2).sum())]
    assert sorted(n_ref) == sorted(gt_sizes)  # references counted on annotated voxels only
    progress_csv = ws.run(DATASET, plans.name, "3d_fullres", "default", 0).progress_csv.read_text()
    assert "dice_1,2" in progress_csv and "dice_2" in progress_csv
    json.dumps(summary)  # the summary stays JSON-serialisable with region keys
