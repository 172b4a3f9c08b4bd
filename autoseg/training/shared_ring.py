"""Reused shared-memory buffers for the batches a loader worker ships, and a compact wire form of drawn parameters.

Shipping a fresh tensor from a worker process costs more than making it: torch moves its storage into a new
shared-memory file (create, size, map, copy, then unmap once the receiver is done), about 14-19 ms of worker CPU for
a 15 MB Hippocampus crop batch against 3 ms for the crops themselves. A storage that is already shared is sent as a
file descriptor, and the receiver maps it once and finds it in torch's cache afterwards. So each worker keeps a ring
of `slots` buffer sets, writes batch k of its own into slot k mod slots (the sampler crops straight into it), and
the receiver copies a batch out before it asks for more (pinning it for a GPU is that copy).

Why a slot is free when it is reused: a DataLoader worker holds at most `prefetch_factor` requested batches, and it
is asked for its batch k only when the consumer takes its batch k - prefetch_factor, after it has copied out every
earlier one. Batch k overwrites batch k - slots, so `slots = prefetch_factor + 1` would do; one more slot is margin.

Drawn augmentation parameters are small tensors in dataclasses: each would get its own shared-memory file (1.3 ms
per batch in all). `to_wire` turns them into numpy arrays, which pickle as bytes, and `from_wire` turns them back.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

PREFETCH = 2  # batches a worker prepares ahead (DataLoader prefetch_factor)
RING_SLOTS = PREFETCH + 2


class SlotBuffers:
    """One slot's shared tensors, handed out in request order and reused while shape and dtype match."""

    def __init__(self) -> None:
        self._tensors: list[torch.Tensor] = []
        self._next = 0

    def reset(self) -> SlotBuffers:
        self._next = 0
        return self

    def empty(self, shape, dtype: torch.dtype) -> torch.Tensor:
        """The next shared tensor of `shape` and `dtype` (uninitialised; allocated on first use or on a change)."""
        i, self._next = self._next, self._next + 1
        shape = tuple(int(s) for s in shape)
        if i < len(self._tensors) and tuple(self._tensors[i].shape) == shape and self._tensors[i].dtype == dtype:
            return self._tensors[i]
        tensor = torch.empty(shape, dtype=dtype).share_memory_()
        if i < len(self._tensors):
            self._tensors[i] = tensor
        else:
            self._tensors.append(tensor)
        return tensor

    def empty_numpy(self, shape, dtype) -> np.ndarray:
        """`empty` as a numpy array (same memory), for numpy writers such as the patch sampler."""
        return self.empty(shape, torch.from_numpy(np.empty(0, dtype=dtype)).dtype).numpy()

    def as_tensor(self, array: np.ndarray) -> torch.Tensor:
        """The shared tensor behind `array` (from `empty_numpy`): `torch.from_numpy` would make a tensor that torch
        does not know to be shared, and shipping that copies it into new shared memory."""
        for tensor in self._tensors[: self._next]:
            if tensor.data_ptr() == array.ctypes.data and tuple(tensor.shape) == array.shape:
                return tensor
        raise ValueError("this array is not one of the slot's shared buffers")

    def copy(self, tensor: torch.Tensor) -> torch.Tensor:
        """A shared tensor holding `tensor`'s values (contiguous)."""
        return self.empty(tensor.shape, tensor.dtype).copy_(tensor)


class SharedRing:
    """`slots` sets of `SlotBuffers` used in turn: `next()` gives the set for the next batch."""

    def __init__(self, slots: int = RING_SLOTS) -> None:
        if slots < 2:
            raise ValueError(f"a shared ring needs at least 2 slots, got {slots}")
        self._slots = [SlotBuffers() for _ in range(int(slots))]
        self._turn = 0

    def next(self) -> SlotBuffers:
        slot = self._slots[self._turn % len(self._slots)]
        self._turn += 1
        return slot.reset()


def to_wire(value: Any) -> Any:
    """`value` with every CPU tensor (inside dataclasses, lists, tuples and dicts) replaced by a `_Wire` numpy copy."""
    return _walk(value, lambda v: _Wire(v.detach().cpu().numpy()) if isinstance(v, torch.Tensor) else v)


def from_wire(value: Any) -> Any:
    """Undo `to_wire`: the same structure with torch CPU tensors (same dtypes and values)."""
    return _walk(value, lambda v: torch.from_numpy(v.array) if isinstance(v, _Wire) else v)


def _walk(value: Any, swap) -> Any:
    """`value` with `swap` applied to every item: an item that `swap` replaces is taken as it returns it; anything
    else is rebuilt through dataclasses (frozen ones too), lists, tuples (named ones too) and dicts."""
    swapped = swap(value)
    if swapped is not value:
        return swapped
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _rebuilt(value, lambda v: _walk(v, swap))
    if isinstance(value, (list, tuple)):
        items = [_walk(v, swap) for v in value]
        return type(value)(items) if not hasattr(value, "_fields") else type(value)(*items)
    if isinstance(value, dict):
        return {k: _walk(v, swap) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class _Wire:
    array: np.ndarray


def _rebuilt(obj: Any, fn) -> Any:
    """A shallow copy of dataclass `obj` with `fn` applied to every field (frozen ones too)."""
    out = object.__new__(type(obj))
    state = dict(getattr(obj, "__dict__", {}))
    for field in dataclasses.fields(obj):
        state[field.name] = fn(getattr(obj, field.name))
    for key, val in state.items():
        object.__setattr__(out, key, val)
    return out
