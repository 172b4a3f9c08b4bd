"""Cascade: the previous stage's map (seg channel 1) becomes one-hot image channels, degraded during training.

Degradation, as `autoseg.training.augment.PrevStageToData`, per sample and label channel c in label order (a label's
change is seen by the later labels of the same sample):

* with p_morph a binary dilation (half of the time) or erosion of 1..max_iterations iterations with the
  face-connected cross (scipy's default structure; iterating it grows an L1 ball). A dilated label takes its voxels
  from the other labels. Runs on the device as max-pooling with line kernels (the union of three line dilations is
  the cross); outside the image counts as background, as scipy's border_value=0;
* with p_component the removal of one connected component (face connectivity), chosen uniformly. Labelling is done
  with scipy on the CPU for the (rare: p 0.2 per label) hit samples only: one label map per hit is copied to the host
  and its removal mask back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from autoseg.errors import ConfigError
from autoseg.training.batch_augment.base import BatchTransform, check_probability, hits, rand


@dataclass(frozen=True)
class CascadeParams:
    """Degradation draws per sample and label channel (B, L); all False without degradation."""

    morph: Tensor  # bool: dilate or erode this label
    dilate: Tensor  # bool: dilation (else erosion)
    iterations: Tensor  # int64 in [1, max_iterations]
    component: Tensor  # bool: remove one connected component
    pick: Tensor  # float64 U[0, 1): which component, floor(pick * count)


class PrevStageToData(BatchTransform[CascadeParams]):
    """seg (B, 2, *S) -> data gains one float32 channel per label (seg channel 1 == label), seg keeps channel 0.

    `labels` are the previous stage's foreground labels, in channel order. p_morph = p_component = 0 (validation):
    one-hot only.
    """

    def __init__(
        self,
        labels: Sequence[int],
        p_morph: float = 0.4,
        p_component: float = 0.2,
        max_iterations: int = 8,
    ):
        self.labels = tuple(int(v) for v in labels)
        if not self.labels:
            raise ConfigError("the cascade's previous-stage labels are empty: give at least one foreground label")
        self.p_morph = check_probability("cascade p_morph", p_morph)
        self.p_component = check_probability("cascade p_component", p_component)
        if int(max_iterations) < 1:
            raise ConfigError(f"cascade max_iterations must be >= 1, got {max_iterations}")
        self.max_iterations = int(max_iterations)

    def draw(self, gen: torch.Generator, batch_size: int, channels: int) -> CascadeParams:
        shape = (batch_size, len(self.labels))
        return CascadeParams(
            morph=hits(gen, self.p_morph, *shape),
            dilate=hits(gen, 0.5, *shape),
            iterations=torch.randint(1, self.max_iterations + 1, shape, generator=gen),
            component=hits(gen, self.p_component, *shape),
            pick=rand(gen, *shape),
        )

    def apply(self, data: Tensor, seg: Tensor, params: CascadeParams) -> tuple[Tensor, Tensor]:
        """data (B, C, *S), seg (B, 2, *S) -> data (B, C + L, *S) float32, seg (B, 1, *S)."""
        if seg.shape[1] != 2:
            raise ValueError(
                f"a cascade batch needs seg with 2 channels (label, previous stage), got {tuple(seg.shape)}"
            )
        labels = torch.tensor(self.labels, dtype=seg.dtype, device=seg.device)
        shape = (1, -1) + (1,) * (seg.ndim - 2)
        hot = seg[:, 1:2] == labels.reshape(shape)  # (B, L, *S) bool
        for c in range(len(self.labels)):
            self._morph(hot, c, params)
            self._remove_component(hot, c, params)
        return torch.cat([data, hot.to(data.dtype)], 1), seg[:, :1].contiguous()

    def _morph(self, hot: Tensor, c: int, params: CascadeParams) -> None:
        for dilate in (True, False):
            chosen = params.morph[:, c] & (params.dilate[:, c] == dilate)
            index = torch.nonzero(chosen).reshape(-1)
            if index.numel() == 0:
                continue
            device_index = index.to(hot.device)
            masks = hot[device_index, c]
            changed = iterate_cross_dilation(
                masks if dilate else ~masks, params.iterations[index, c], border=not dilate
            )
            if dilate:
                picked = hot[device_index]
                picked[changed[:, None].expand_as(picked)] = False
                picked[:, c] = changed
                hot[device_index] = picked
            else:
                hot[device_index, c] = ~changed

    def _remove_component(self, hot: Tensor, c: int, params: CascadeParams) -> None:
        for b in torch.nonzero(params.component[:, c]).reshape(-1).tolist():
            components, count = ndimage.label(hot[b, c].cpu().numpy())
            if count:
                chosen = min(int(float(params.pick[b, c]) * count), count - 1) + 1
                drop = torch.from_numpy(np.ascontiguousarray(components == chosen)).to(hot.device)
                hot[b, c] &= ~drop


def iterate_cross_dilation(masks: Tensor, iterations: Tensor, border: bool) -> Tensor:
    """Dilate each bool mask (n, *S) `iterations[i]` times with the face-connected cross; `border` is the value
    outside the volume (False: scipy's binary_dilation; True gives erosion as NOT dilate(NOT x, border=True))."""
    ndim = masks.ndim - 1
    pool = F.max_pool3d if ndim == 3 else F.max_pool2d
    state = masks[:, None].to(torch.float32)  # (n, 1, *S)
    counts = iterations.to(masks.device).reshape(-1, *([1] * (ndim + 1)))
    for step in range(1, int(iterations.max()) + 1):
        padded = F.pad(state, (1, 1) * ndim, value=float(border))
        grown = state
        for axis in range(ndim):
            kernel = [1] * ndim
            kernel[axis] = 3
            lines = pool(padded, kernel, stride=1)
            crop = [slice(None), slice(None)] + [slice(None) if a == axis else slice(1, -1) for a in range(ndim)]
            grown = torch.maximum(grown, lines[tuple(crop)])
        state = torch.where(counts >= step, grown, state)
    return state[:, 0] > 0.5
