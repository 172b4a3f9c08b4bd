"""Loader workers write batches into reused shared-memory buffers; the consumer copies each out before asking for
more."""

import dataclasses
import pickle
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch
from test_loader import STRIDES_3D, assert_same, blob_cases, configuration

from autoseg.training.augment import augment_spec
from autoseg.training.batch_augment.spatial import SpatialParams
from autoseg.training.loader import TRAIN_STREAM, BatchSource, DataIterator, SampledBatch
from autoseg.training.shared_ring import RING_SLOTS, SharedRing, SlotBuffers, from_wire, to_wire


def test_slot_buffers_are_shared_and_reused_until_the_shape_changes():
    slot = SlotBuffers()
    a = slot.empty((2, 3), torch.float32)
    b = slot.empty_numpy((4,), np.int8)
    assert a.is_shared() and b.dtype == np.int8 and b.shape == (4,)
    slot.reset()
    assert slot.empty((2, 3), torch.float32).data_ptr() == a.data_ptr()
    assert slot.empty_numpy((4,), np.int8).ctypes.data == b.ctypes.data  # numpy view of the same shared memory
    slot.reset()
    assert slot.empty((2, 4), torch.float32).data_ptr() != a.data_ptr()  # a new shape gets a new buffer
    copied = slot.copy(torch.arange(6).reshape(2, 3))
    assert copied.is_shared() and copied.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_ring_hands_out_its_slots_in_turn():
    ring = SharedRing(3)
    slots = [ring.next() for _ in range(7)]
    assert slots[0] is slots[3] is slots[6] and slots[1] is slots[4] and len({id(s) for s in slots}) == 3
    with pytest.raises(ValueError, match="at least 2 slots"):
        SharedRing(1)


@pytest.fixture
def source_args(tmp_path):
    ids = blob_cases(tmp_path)
    spec = augment_spec(configuration((8, 16, 16), STRIDES_3D))
    return dict(folder=tmp_path, case_ids=ids, spec=spec, batch_size=2, oversample=0.33, seed=[3], stream=TRAIN_STREAM)


def test_drawn_parameters_travel_as_numpy_and_come_back_equal(source_args):
    source = BatchSource(augmentation="default", defer_augmentation=True, **source_args)
    sampled = source.make(4)
    wire = to_wire(sampled.params)
    assert isinstance(wire[0], SpatialParams) and isinstance(wire[0].angles.array, np.ndarray)
    back = from_wire(wire)
    assert_equal_params(sampled.params, back)
    for dumps in (pickle.dumps, ForkingPickler.dumps):  # as a worker ships it: same batch once augmented
        received = pickle.loads(dumps(sampled))
        assert isinstance(received, SampledBatch)
        assert_same([source.augment(received)], [source.augment(sampled)])


def assert_equal_params(a, b):
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif dataclasses.is_dataclass(a):
        for field in dataclasses.fields(a):
            assert_equal_params(getattr(a, field.name), getattr(b, field.name))
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_equal_params(x, y)
    else:
        assert a == b


@pytest.mark.parametrize(
    "augmentation, defer", [("default", False), ("default", True), ("batchgenerators", False), ("none", False)]
)
def test_a_long_stream_through_the_ring_equals_the_in_process_one(source_args, augmentation, defer):
    """Three times more batches than ring slots, all kept: none is overwritten by a later one."""
    n = 3 * RING_SLOTS
    expected = [
        BatchSource(augmentation=augmentation, **source_args).make(i) for i in range(n)
    ]  # fmt: skip
    source = BatchSource(augmentation=augmentation, defer_augmentation=defer, **source_args)
    with DataIterator(source, 1, device=torch.device("cpu")) as it:
        got = [next(it) for _ in range(n)]
        # the received batches map the worker's few ring slots again and again
        assert len({b.data.data_ptr() for b in it._mapped}) == RING_SLOTS
    assert_same(got, expected)
    assert len({b.data.data_ptr() for b in got}) == n  # the consumer's copies are its own


@pytest.mark.parametrize("defer", [True, False])
def test_a_worker_ships_its_slots_own_shared_tensors(source_args, defer):
    """Shipping a tensor torch does not know to be shared copies it into new shared memory (the cost removed)."""
    source = BatchSource(augmentation="default", defer_augmentation=defer, **source_args)
    ring = SharedRing(2)

    def tensors(batch):
        return [batch.data, batch.seg] if defer else [batch.data, *batch.target]

    first = tensors(source.make(0, ring.next()))
    source.make(1, ring.next())
    third = tensors(source.make(2, ring.next()))  # slot 0 again
    assert all(t.is_shared() for t in third)
    assert [t.data_ptr() for t in third] == [t.data_ptr() for t in first]
    plain = tensors(source.make(2))  # the same values as made without a slot
    assert all(torch.equal(a, b) for a, b in zip(plain, third))
    slot = SlotBuffers()
    with pytest.raises(ValueError, match="not one of the slot's shared buffers"):
        slot.as_tensor(np.zeros(3))
