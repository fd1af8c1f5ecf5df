"""Input corruptions for DAE and Swin-UNETR SSL, as pure functions of (volume, parameters, generator)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nnssl.errors import NnsslError
from nnssl.methods.masking import random_token_mask
from nnssl.methods.sampling import normal, randint, uniform
from nnssl.models.patchify import tokens_to_voxel_mask

NUM_QUARTER_TURNS = 4  # 0, 90, 180, 270 degrees
ROTATION_PLANE = (3, 4)  # (H, W) of (B, C, D, H, W): the axial plane of CT


def random_quarter_turns(batch: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """(B,) int64 in [0, 4): the number of 90° turns per sample."""
    return randint(NUM_QUARTER_TURNS, (batch,), generator, device)


def rotate_quarter_turns(x: torch.Tensor, turns: torch.Tensor,
                         plane: tuple[int, int] = ROTATION_PLANE) -> torch.Tensor:
    """Rotate each sample by ``turns[b] * 90°`` in ``plane``.

    Args:
        x: (B, C, D, H, W); the two axes of ``plane`` must have equal length.
        turns: (B,) int.
        plane: Two axes of ``x``.

    Returns:
        (B, C, D, H, W).
    """
    if x.shape[plane[0]] != x.shape[plane[1]]:
        raise NnsslError(f"90° rotations need equal sizes in the rotation plane, got {tuple(x.shape[2:])}")
    sample_plane = (plane[0] - 1, plane[1] - 1)  # without the batch axis
    return torch.stack([torch.rot90(v, int(k), sample_plane) for v, k in zip(x, turns.tolist(), strict=True)])


def add_gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """x + N(0, std²) per voxel; (B, C, D, H, W) -> same."""
    return x + std * normal(tuple(x.shape), generator, x.device).to(x.dtype)


def down_up_sample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Trilinear downsampling by ``factor`` and back: removes detail finer than ``factor`` voxels.

    Args:
        x: (B, C, D, H, W), each spatial size a multiple of ``factor``.
        factor: Integer downsampling factor >= 1.

    Returns:
        (B, C, D, H, W).
    """
    size = tuple(x.shape[2:])
    low = F.interpolate(x, size=tuple(s // factor for s in size), mode="trilinear", align_corners=False)
    return F.interpolate(low, size=size, mode="trilinear", align_corners=False)


def local_mask(x: torch.Tensor, cube_size: int, ratio: float, generator: torch.Generator | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero out a fraction ``ratio`` of the grid-aligned cubes of ``cube_size``³ voxels (DAE's local masking).

    Args:
        x: (B, C, D, H, W), each spatial size a multiple of ``cube_size``.
        cube_size: Cube edge in voxels.
        ratio: Fraction of cubes hidden, exactly (see ``random_token_mask``).
        generator: Randomness.

    Returns:
        (masked (B, C, D, H, W), voxel mask (B, 1, D, H, W) bool, True = zeroed).
    """
    grid = tuple(s // cube_size for s in x.shape[2:])
    cube = (cube_size,) * len(grid)
    mask = random_token_mask(x.shape[0], grid, ratio, generator, x.device)  # (B, N_cubes)
    voxels = tokens_to_voxel_mask(mask, grid, cube)  # (B, 1, D, H, W)
    return x.masked_fill(voxels, 0.0), voxels


def drop_regions(x: torch.Tensor, num_regions: int, min_fraction: float, max_fraction: float,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace random boxes with Gaussian noise (Swin-UNETR pretraining's in-painting corruption).

    Each of ``num_regions`` boxes per sample has, per axis, an edge drawn uniformly from
    [min_fraction, max_fraction] of that axis and a uniform position; boxes may overlap.

    Args:
        x: (B, C, D, H, W).
        num_regions: Boxes per sample.
        min_fraction: Smallest box edge as a fraction of the axis.
        max_fraction: Largest box edge as a fraction of the axis.
        generator: Randomness.

    Returns:
        (corrupted (B, C, D, H, W), voxel mask (B, 1, D, H, W) bool, True = replaced).
    """
    if not 0.0 < min_fraction <= max_fraction <= 1.0:
        raise NnsslError(f"region fractions must satisfy 0 < min ({min_fraction}) <= max ({max_fraction}) <= 1")
    b, _, *size = x.shape
    edge_u = uniform((b, num_regions, len(size)), generator, "cpu")  # (B, R, 3)
    start_u = uniform((b, num_regions, len(size)), generator, "cpu")  # (B, R, 3)
    mask = torch.zeros(b, 1, *size, dtype=torch.bool, device=x.device)
    for i in range(b):
        for r in range(num_regions):
            box = []
            for axis, s in enumerate(size):
                edge = max(1, int(s * (min_fraction + (max_fraction - min_fraction) * float(edge_u[i, r, axis]))))
                start = int((s - edge) * float(start_u[i, r, axis]))
                box.append(slice(start, start + edge))
            mask[(i, slice(None), *box)] = True
    noise = normal(tuple(x.shape), generator, x.device).to(x.dtype)  # (B, C, D, H, W)
    return torch.where(mask, noise, x), mask
