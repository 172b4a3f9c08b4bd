"""Spatial transforms: rotation + scaling with the final centre crop (one affine resampling per batch), mirroring.

Geometry (batchgenerators v1's `augment_spatial` without elastic deformation and with a centre crop): output voxel q
of the patch P samples the input of spatial shape S at

    x = (S - 1) / 2 + A (q - (P - 1) / 2),   A = s * R^T,

where R = Rx(a0) Ry(a1) Rz(a2) in 3D (R = R(a0) in 2D) and s is the scale factor (s < 1 zooms in). Images are
interpolated linearly and labels with nearest neighbour; a point outside [0, S - 1] on any axis gets 0 (image) or
-1 (label), exactly scipy's ``map_coordinates(mode="constant")``. Samples that are neither rotated nor scaled are
cropped (start (S - P) // 2), bit-exactly, as batchgenerators does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from autoseg.errors import ConfigError
from autoseg.training.batch_augment.base import (
    BatchTransform,
    centre_crop,
    check_input,
    check_ndim,
    check_probability,
    check_range,
    hits,
    split_uniform,
    uniform,
)


@dataclass(frozen=True)
class SpatialParams:
    """Per-sample rotation and scaling (CPU tensors, B = batch size)."""

    rotated: Tensor  # (B,) bool
    angles: Tensor  # (B, 3) float64 radians for 3D (about axes 0, 1, 2), (B, 1) in-plane; 0 where not rotated
    scaled: Tensor  # (B,) bool
    scale: Tensor  # (B,) float64; 1 where not scaled

    @property
    def transformed(self) -> Tensor:
        """(B,) bool: samples that are resampled (the others are only centre-cropped)."""
        return self.rotated | self.scaled

    def matrices(self) -> Tensor:
        """(B, k, k) float64 A = s R^T mapping output offsets from the patch centre to input offsets (k axes)."""
        a = self.angles
        c, s = torch.cos(a), torch.sin(a)
        one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])
        if a.shape[1] == 1:
            rot = torch.stack([torch.stack([c[:, 0], -s[:, 0]], -1), torch.stack([s[:, 0], c[:, 0]], -1)], -2)
        else:
            rx = _matrix([[one, zero, zero], [zero, c[:, 0], -s[:, 0]], [zero, s[:, 0], c[:, 0]]])
            ry = _matrix([[c[:, 1], zero, s[:, 1]], [zero, one, zero], [-s[:, 1], zero, c[:, 1]]])
            rz = _matrix([[c[:, 2], -s[:, 2], zero], [s[:, 2], c[:, 2], zero], [zero, zero, one]])
            rot = rx @ ry @ rz
        return self.scale[:, None, None] * rot.transpose(1, 2)


def _matrix(rows: list[list[Tensor]]) -> Tensor:
    """(B, n, n) from n x n entries of shape (B,)."""
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


class Spatial(BatchTransform[SpatialParams]):
    """Rotation (p_rotation, every angle U(-rotation, rotation)) and scaling (p_scaling, one factor for all axes) of a
    larger sample into the final `patch_size`: one sampling grid and one `grid_sample` (per data / seg) for all
    transformed samples of the batch.

    dummy_2d: 3D data transformed in-plane (axes 1, 2) with one angle, every slice alike (the slice axis is
    centre-cropped). scale_split_at_one: draw the factor as batchgenerators v1 does (half U(low, 1), half U(1, high));
    False draws U(low, high).
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        rotation: float,
        dummy_2d: bool = False,
        p_rotation: float = 0.2,
        p_scaling: float = 0.2,
        scale_range: Sequence[float] = (0.7, 1.4),
        scale_split_at_one: bool = True,
    ):
        self.patch_size = tuple(int(v) for v in patch_size)
        self.ndim = check_ndim(len(self.patch_size))
        if dummy_2d and self.ndim != 3:
            raise ConfigError(f"dummy 2D augmentation needs a 3D patch, got {self.patch_size}")
        if not math.isfinite(rotation) or rotation < 0:
            raise ConfigError(f"augmentation setting rotation must be a finite angle >= 0 (radians), got {rotation}")
        self.rotation, self.dummy_2d = float(rotation), bool(dummy_2d)
        self.p_rotation = check_probability("p_rotation", p_rotation)
        self.p_scaling = check_probability("p_scaling", p_scaling)
        self.scale_range = check_range("scale_range", scale_range, minimum=1e-6)
        self.scale_split_at_one = bool(scale_split_at_one)

    @property
    def plane_axes(self) -> int:
        """Number of axes the affine acts on (2 for 2D and dummy 2D, else 3)."""
        return 2 if self.dummy_2d else self.ndim

    def draw(self, gen: torch.Generator, batch_size: int, channels: int) -> SpatialParams:
        n_angles = 3 if self.plane_axes == 3 else 1
        rotated = hits(gen, self.p_rotation, batch_size)
        angles = uniform(gen, -self.rotation, self.rotation, batch_size, n_angles) * rotated[:, None]
        scaled = hits(gen, self.p_scaling, batch_size)
        low, high = self.scale_range
        factor = (
            split_uniform(gen, low, high, batch_size)
            if self.scale_split_at_one
            else uniform(gen, low, high, batch_size)
        )
        scale = torch.where(scaled, factor, torch.ones_like(factor))
        return SpatialParams(rotated, angles, scaled, scale)

    def apply(self, data: Tensor, seg: Tensor, params: SpatialParams) -> tuple[Tensor, Tensor]:
        """data (B, C, *S) float32, seg (B, Cs, *S) int -> (B, C, *patch), (B, Cs, *patch)."""
        check_input(data, seg, self.ndim, "Spatial")
        if self.dummy_2d:  # the slice axis is never resampled
            size = (self.patch_size[0], *data.shape[-2:])
            data, seg = centre_crop(data, size), centre_crop(seg, size)
        k = self.plane_axes
        plane = self.patch_size[-k:]
        out_data = centre_crop(data, plane).contiguous()
        out_seg = centre_crop(seg, plane).contiguous()
        index = torch.nonzero(params.transformed).reshape(-1)
        if index.numel() == 0:
            return out_data, out_seg
        theta = _theta(params.matrices()[index], data.shape[-k:], plane).to(data.device)
        dev_index = index.to(data.device)
        picked_data, picked_seg = data.index_select(0, dev_index), seg.index_select(0, dev_index)
        n = index.numel()
        grid, inside = affine_grid(theta, plane)
        flat_data = picked_data.reshape(n, -1, *data.shape[-k:])  # dummy 2D: slices become channels
        flat_seg = picked_seg.reshape(n, -1, *seg.shape[-k:]).to(torch.float32)
        warped = F.grid_sample(flat_data, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        warped = torch.where(inside, warped, torch.zeros((), dtype=warped.dtype, device=warped.device))
        labels = F.grid_sample(flat_seg, grid, mode="nearest", padding_mode="zeros", align_corners=True)
        labels = torch.where(inside, labels, torch.full((), -1.0, device=labels.device))
        out_data.index_copy_(0, dev_index, warped.reshape(n, *out_data.shape[1:]))
        out_seg.index_copy_(0, dev_index, labels.reshape(n, *out_seg.shape[1:]).to(out_seg.dtype))
        return out_data, out_seg


def affine_grid(theta: Tensor, size: Sequence[int]) -> tuple[Tensor, Tensor]:
    """`F.affine_grid(theta, (n, 1, *size), align_corners=True)` (n, *size, k) and the mask (n, 1, *size) of the
    points inside [-1, 1] on every axis, built by broadcasting one coordinate component at a time: the same values
    (up to float rounding), about 3x cheaper on the CPU than affine_grid's batched matmul plus a separate mask."""
    n, k = theta.shape[0], len(size)
    ones = [1] * k

    def base(axis: int) -> Tensor:  # normalised coordinates along spatial `axis`, shaped to broadcast
        if size[axis] > 1:
            steps = torch.linspace(-1, 1, size[axis], device=theta.device)
        else:
            steps = torch.zeros(1, device=theta.device)
        shape = [1, *ones]
        shape[1 + axis] = size[axis]
        return steps.reshape(shape)

    xyz = [base(k - 1 - i) for i in range(k)]  # grid component i indexes spatial axis k - 1 - i
    components, inside = [], None
    for j in range(k):
        value = theta[:, j, k].reshape(n, *ones)
        for i in range(k):
            value = value + theta[:, j, i].reshape(n, *ones) * xyz[i]
        value = value.expand(n, *size)
        components.append(value)
        ok = (value >= -1) & (value <= 1)
        inside = ok if inside is None else inside & ok
    return torch.stack(components, -1), inside[:, None]


def _theta(matrices: Tensor, size: Sequence[int], patch: Sequence[int]) -> Tensor:
    """float32 (n, k, k + 1) `affine_grid` matrices (align_corners=True, x-first axis order, no translation) for
    voxel-space matrices A (n, k, k) mapping patch offsets from (P - 1) / 2 to input offsets from (S - 1) / 2."""
    half_in = torch.tensor([max(s - 1, 1) / 2 for s in size], dtype=torch.float64)
    half_out = torch.tensor([(p - 1) / 2 for p in patch], dtype=torch.float64)
    normalised = matrices * half_out[None, None, :] / half_in[None, :, None]
    normalised = normalised.flip(1).flip(2)  # grid coordinates are (x, y, z): the spatial axes in reverse order
    translation = torch.zeros(*normalised.shape[:2], 1, dtype=torch.float64)
    return torch.cat([normalised, translation], 2).to(torch.float32)


@dataclass(frozen=True)
class MirrorParams:
    """flips (B, len(axes)) bool: sample b is mirrored along axes[i] where flips[b, i]."""

    flips: Tensor


class Mirror(BatchTransform[MirrorParams]):
    """Mirror images and labels along each of `axes` (spatial axes, 0 = first) independently with probability p."""

    def __init__(self, axes: Sequence[int], p: float = 0.5):
        self.axes = tuple(int(a) for a in axes)
        if any(a < 0 or a > 2 for a in self.axes) or len(set(self.axes)) != len(self.axes):
            raise ConfigError(f"mirror axes must be distinct spatial axes in 0..2, got {tuple(axes)}")
        self.p = check_probability("p_mirror", p)

    def draw(self, gen: torch.Generator, batch_size: int, channels: int) -> MirrorParams:
        return MirrorParams(hits(gen, self.p, batch_size, len(self.axes)))

    def apply(self, data: Tensor, seg: Tensor, params: MirrorParams) -> tuple[Tensor, Tensor]:
        """data (B, C, *S), seg (B, Cs, *S) -> same shapes, flipped per sample."""
        if self.axes and max(self.axes) >= data.ndim - 2:
            raise ValueError(f"Mirror axes {self.axes} do not exist in data of shape {tuple(data.shape)}")
        data, seg = data.contiguous(), seg.contiguous()
        for i, axis in enumerate(self.axes):
            index = torch.nonzero(params.flips[:, i]).reshape(-1)
            if index.numel():
                index = index.to(data.device)
                data.index_copy_(0, index, data.index_select(0, index).flip(axis + 2))
                seg.index_copy_(0, index, seg.index_select(0, index).flip(axis + 2))
        return data, seg
