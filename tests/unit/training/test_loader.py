import gc
import os
import random
import signal
import time

import numpy as np
import pytest
import torch

from autoseg.data.geometry import Geometry
from autoseg.errors import ConfigError, DatasetError
from autoseg.planning.plans import Configuration, NetworkSpec
from autoseg.preprocessing.storage import CaseProperties, PreprocessedCase, save_case
from autoseg.training.augment import augment_spec
from autoseg.training.config import TrainConfig
from autoseg.training.distributed import rank_oversampling, split_batch
from autoseg.training.loader import TRAIN_STREAM, Batch, BatchSource, SampledBatch, benchmark_loader, make_loaders
from autoseg.training.sampling import forced_foreground

STRIDES_3D = [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
STRIDES_2D = [[1, 1], [2, 2], [2, 2]]


def configuration(patch, strides, batch_size=2):
    params = {"n_stages": len(strides), "strides": strides}
    n = len(patch)
    return Configuration(
        "c",
        "d",
        (1.0,) * n,
        tuple(patch),
        tuple(patch),
        batch_size,
        False,
        ("zscore",),
        (False,),
        NetworkSpec("unet", params),
    )


def write_case(folder, cid, lab, channels=1, seed=0):
    """Image = label + noise; class locations of labels 1 and 2 as preprocessing stores them."""
    rng = np.random.default_rng(seed)
    img = (lab[None] + 0.1 * rng.normal(size=(channels, *lab.shape))).astype(np.float32)
    shape = lab.shape
    props = CaseProperties(
        cid,
        Geometry.identity(),
        shape,
        tuple((0, s) for s in shape),
        shape,
        (1.0,) * 3,
        (1.0,) * 3,
        shape,
        (0, 1, 2),
        tuple(int(v) for v in np.unique(lab) if v > 0),
    )
    locs = {v: np.argwhere(lab == v).astype(np.int32) for v in (1, 2)}
    save_case(folder, PreprocessedCase(img, lab[None].astype(np.int8), props, locs))


def blob_cases(folder, n=4, shape=(12, 24, 24)):
    """Cases with one small cube of label 1 and 2 each: random patches rarely contain them."""
    for i in range(n):
        lab = np.zeros(shape, np.int8)
        z, y = 1 + i % 3, 2 + 3 * i
        lab[z : z + 2, y : y + 2, 2:4] = 1
        lab[-4:-2, -3:-1, y : y + 2] = 2
        write_case(folder, f"case_{i}", lab, seed=i)
    return [f"case_{i}" for i in range(n)]


def fg_present(batch):
    return [bool((t > 0).any()) for t in batch.target[0]]


@pytest.fixture
def cases(tmp_path):
    return tmp_path, blob_cases(tmp_path)


def test_forced_foreground_rule():
    assert forced_foreground(2, 0.33) == [False, True]
    assert forced_foreground(9, 0.33) == [False] * 6 + [True] * 3
    assert forced_foreground(4, 0.0) == [False] * 4 and forced_foreground(4, 1.0) == [True] * 4


def test_rank_batches_keep_the_global_pattern():
    for world in (2, 3):
        flags = []
        for rank in range(world):
            flags += forced_foreground(split_batch(7, rank, world)[1], rank_oversampling(7, 0.33, rank, world))
        assert flags == forced_foreground(7, 0.33)
    with pytest.raises(ConfigError, match="smaller than the number of processes"):
        split_batch(1, 0, 2)


def test_3d_batches_shapes_dtypes_and_deep_supervision(cases):
    folder, ids = cases
    train, val = make_loaders(folder, ids[:3], ids[3:], configuration((8, 16, 16), STRIDES_3D), num_workers=0)
    for it in (train, val):
        b = next(it)
        assert b.data.shape == (2, 1, 8, 16, 16) and b.data.dtype == torch.float32
        assert [tuple(t.shape) for t in b.target] == [(2, 1, 8, 16, 16), (2, 1, 4, 8, 8)]
        assert all(t.dtype == torch.int64 and t.min() >= 0 and t.max() <= 2 for t in b.target)
    train, _ = make_loaders(
        folder, ids, ids, configuration((8, 16, 16), STRIDES_3D), num_workers=0, deep_supervision=False
    )
    assert len(next(train).target) == 1


def test_2d_batches_from_3d_data(cases):
    folder, ids = cases
    train, _ = make_loaders(
        folder,
        ids,
        ids,
        configuration((16, 16), STRIDES_2D, 3),
        num_workers=0,
        oversample_foreground=1.0,
        augmentation="none",
    )
    for _ in range(5):
        b = next(train)
        assert b.data.shape == (3, 1, 16, 16) and [tuple(t.shape) for t in b.target] == [(3, 1, 16, 16), (3, 1, 8, 8)]
        assert all(fg_present(b))  # forced slices contain their label
    train, _ = make_loaders(folder, ids, ids, configuration((16, 16), STRIDES_2D, 3), num_workers=0)
    assert next(train).data.shape == (3, 1, 16, 16)


def test_2d_data(tmp_path):
    for i in range(2):
        lab = np.zeros((1, 30, 20), np.int8)
        lab[0, 10:14, 5:9] = 1
        write_case(tmp_path, f"img_{i}", lab, channels=3)
    train, _ = make_loaders(tmp_path, ["img_0"], ["img_1"], configuration((16, 16), STRIDES_2D), num_workers=0)
    b = next(train)
    assert b.data.shape == (2, 3, 16, 16) and b.target[1].shape == (2, 1, 8, 8)


def test_oversampling_p1_every_patch_has_foreground(cases):
    folder, ids = cases
    conf = configuration((8, 16, 16), STRIDES_3D, 3)
    train, _ = make_loaders(folder, ids, ids, conf, num_workers=0, oversample_foreground=1.0, augmentation="none")
    assert all(all(fg_present(next(train))) for _ in range(10))
    # rotation/zoom-out with nearest-neighbour labels may skip a 2-voxel cube now and then
    train, _ = make_loaders(folder, ids, ids, conf, num_workers=0, oversample_foreground=1.0)
    assert np.mean([fg_present(next(train)) for _ in range(20)]) >= 0.95
    train, _ = make_loaders(folder, ids, ids, conf, num_workers=0, oversample_foreground=0.0, augmentation="none")
    assert np.mean([fg_present(next(train)) for _ in range(20)]) < 0.5  # the cubes are rarely hit at random


def test_oversampling_one_of_two_forced(tmp_path):
    lab = np.zeros((40, 64, 64), np.int8)
    lab[0:2, 0:2, 0:2] = 1  # tiny foreground in a corner: random patches almost never see it
    write_case(tmp_path, "big", lab)
    train, _ = make_loaders(
        tmp_path,
        ["big"],
        ["big"],
        configuration((8, 16, 16), STRIDES_3D),
        num_workers=0,
        oversample_foreground=0.33,
        augmentation="none",
    )
    hits = np.array([fg_present(next(train)) for _ in range(30)])
    assert hits[:, 1].all()
    assert hits[:, 0].mean() < 0.3


def test_small_case_is_padded_and_minus_one_removed(tmp_path):
    lab = np.ones((4, 8, 8), np.int8)
    write_case(tmp_path, "small", lab)
    for aug in ("none", "default"):
        train, _ = make_loaders(
            tmp_path,
            ["small"],
            ["small"],
            configuration((8, 16, 16), STRIDES_3D),
            num_workers=0,
            augmentation=aug,
            seed=1,
        )
        b = next(train)
        t = b.target[0]
        assert t.min() == 0 and t.max() == 1  # the -1 padding became background
        if aug == "none":  # the case sits in the middle: pad (2, 4, 4) before each axis
            inside = torch.zeros_like(t, dtype=torch.bool)
            inside[:, :, 2:6, 4:12, 4:12] = True
            assert (t[inside] == 1).all() and (t[~inside] == 0).all()
            assert (b.data[~inside] == 0).all() and (b.data[inside] > 0.5).float().mean() > 0.99


def assert_same(batches_a, batches_b):
    for a, b in zip(batches_a, batches_b):
        assert torch.equal(a.data, b.data)
        assert all(torch.equal(x, y) for x, y in zip(a.target, b.target))


def take(it, n):
    return [next(it) for _ in range(n)]


def test_determinism_for_any_worker_count_and_resume(cases):
    folder, ids = cases
    conf = configuration((8, 16, 16), STRIDES_3D)
    ref, ref_val = make_loaders(folder, ids[:3], ids[3:], conf, num_workers=0, seed=7)
    expected, expected_val = take(ref, 5), take(ref_val, 2)
    again, _ = make_loaders(folder, ids[:3], ids[3:], conf, num_workers=0, seed=7)
    assert_same(take(again, 5), expected)
    train, val = make_loaders(folder, ids[:3], ids[3:], conf, num_workers=2, seed=7)
    with train, val:
        assert_same(take(train, 5), expected)
        assert_same(take(val, 2), expected_val)
    resumed, _ = make_loaders(folder, ids[:3], ids[3:], conf, num_workers=0, seed=7, start_batches=(3, 0))
    assert_same(take(resumed, 2), expected[3:])
    other, _ = make_loaders(folder, ids[:3], ids[3:], conf, num_workers=0, seed=8)
    assert not torch.equal(next(other).data, expected[0].data)
    fold1, _ = make_loaders(folder, ids[:3], ids[3:], conf, num_workers=0, seed=7, seed_key=(1,))
    assert not torch.equal(next(fold1).data, expected[0].data)


def test_global_random_states_are_left_alone(cases):
    folder, ids = cases
    train, _ = make_loaders(folder, ids, ids, configuration((8, 16, 16), STRIDES_3D), num_workers=0)
    np.random.seed(123)
    random.seed(5)
    take(train, 3)
    assert np.random.randint(1 << 30) == np.random.RandomState(123).randint(1 << 30)
    assert random.random() == pytest.approx(random.Random(5).random())


def test_train_config_fields_are_used(cases):
    folder, ids = cases
    cfg = TrainConfig(seed=3, oversample_foreground=1.0, augmentation="none", deep_supervision=False)
    train, _ = make_loaders(folder, ids, ids, configuration((8, 16, 16), STRIDES_3D, 4), cfg, 0)
    b = next(train)
    assert len(b.target) == 1 and all(fg_present(b))
    plain, _ = make_loaders(
        folder,
        ids,
        ids,
        configuration((8, 16, 16), STRIDES_3D, 4),
        num_workers=0,
        seed=3,
        oversample_foreground=1.0,
        augmentation="none",
        deep_supervision=False,
    )
    assert_same([next(plain)], [b])


def test_wait_time_is_recorded(cases):
    folder, ids = cases
    train, _ = make_loaders(folder, ids, ids, configuration((8, 16, 16), STRIDES_3D), num_workers=0)
    take(train, 3)
    assert train.position == 3 and train.last_wait > 0
    waited = train.take_wait_seconds()
    assert waited >= train.last_wait and train.wait_seconds == 0.0


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_shut_down_on_close_and_on_garbage_collection(cases):
    folder, ids = cases
    conf = configuration((8, 16, 16), STRIDES_3D)
    train, val = make_loaders(folder, ids, ids, conf, num_workers=2)
    next(train), next(val)
    pids = train.worker_pids + val.worker_pids
    assert len(pids) == 3 and all(alive(p) for p in pids)
    train.close()
    val.close()
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)  # joined: not even zombies
    with pytest.raises(RuntimeError, match="closed"):
        next(train)
    train, val = make_loaders(folder, ids, ids, conf, num_workers=1)
    next(train)
    pids = train.worker_pids + val.worker_pids
    del train, val
    gc.collect()
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)


def test_dead_worker_raises_instead_of_hanging(cases):
    folder, ids = cases
    train, val = make_loaders(folder, ids, ids, configuration((8, 16, 16), STRIDES_3D), num_workers=1)
    val.close()
    next(train)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="worker"):  # ours, or torch's SIGCHLD handler if it fires first
        try:
            os.kill(train.worker_pids[0], signal.SIGKILL)
            for _ in range(10):
                next(train)
        finally:
            train.close()
    assert time.monotonic() - start < 30


def test_missing_case_names_the_folder(cases):
    folder, ids = cases
    with pytest.raises(DatasetError, match=r"1 case\(s\) are not preprocessed \(nope\)"):
        make_loaders(folder, ids + ["nope"], ids, configuration((8, 16, 16), STRIDES_3D), num_workers=0)


def test_benchmark_loader_reports_rate(cases):
    folder, ids = cases
    r = benchmark_loader(folder, ids, configuration((8, 16, 16), STRIDES_3D), n_batches=4, warmup=1)
    assert r["n_batches"] == 4 and r["batches_per_s"] == pytest.approx(4 / r["seconds"]) and r["batch_size"] == 2


def test_deferred_augmentation_ships_compact_crops_and_gives_the_same_batch(cases):
    """On a GPU the workers ship the crops (int8 labels) with the drawn parameters and the training process augments:
    the batch equals the one augmented inside the worker (here both on CPU), for every index."""
    folder, ids = cases
    spec = augment_spec(configuration((8, 16, 16), STRIDES_3D))
    common = dict(spec=spec, augmentation="default", batch_size=2, oversample=0.33, seed=[7, 0], stream=TRAIN_STREAM)
    in_worker = BatchSource(folder, ids, **common)
    deferred = BatchSource(folder, ids, defer_augmentation=True, **common)
    for index in (0, 5):
        sampled = deferred.make(index)
        assert isinstance(sampled, SampledBatch) and sampled.seg.dtype == torch.int8
        assert sampled.data.shape == (2, 1, *in_worker.pipeline.sample_size) and sampled.seg.min() == -1
        assert_same([deferred.augment(sampled, torch.device("cpu"))], [in_worker.make(index)])
    batchgenerators = BatchSource(folder, ids, **{**common, "augmentation": "batchgenerators"}, defer_augmentation=True)
    assert isinstance(batchgenerators.make(0), Batch)  # a numpy pipeline always augments in the worker
