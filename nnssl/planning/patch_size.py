"""Pretraining and downstream patch sizes, on a grid every encoder accepts."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from nnssl.errors import NnsslError

# Every patch axis must be a multiple of this: the least common multiple of every encoder's grid, i.e. the ViT/Primus
# token size (8 voxels) and MONAI's Swin transformer, which halves the resolution 5 times (2**5 = 32).
# Defined once here.
VIT_TOKEN_SIZE = 8
SWIN_DOWNSAMPLING = 2**5
PATCH_GRID = math.lcm(VIT_TOKEN_SIZE, SWIN_DOWNSAMPLING)

# Default pretraining crop: 160^3 voxels fits a ViT-B/Swin-B with a batch of a few crops on a 40-80 GB GPU (Primus uses
# 160^3 too). It is capped per axis to the median resampled image shape so most crops hold image, not padding.
DEFAULT_MAX_PATCH_SIZE = (160, 160, 160)
AXIS_NAMES = ("Z", "Y", "X")


@dataclass(frozen=True)
class PatchSizeDecision:
    """A planned patch size (Z, Y, X) and the reason sentence for the plans' ``decisions``."""

    patch_size: tuple[int, int, int]
    reason: str


def round_to_grid(length: float, grid: int = PATCH_GRID) -> int:
    """Nearest multiple of ``grid``, at least one grid step (``62 -> 64``, ``47 -> 32``, ``10 -> 32``)."""
    return max(grid, int(math.floor(length / grid + 0.5)) * grid)


def default_patch_size(
    median_shape: Sequence[float],
    max_patch_size: Sequence[int] = DEFAULT_MAX_PATCH_SIZE,
    grid: int = PATCH_GRID,
) -> PatchSizeDecision:
    """The median resampled shape rounded to the grid and capped at ``max_patch_size`` per axis.

    Args:
        median_shape: median image shape after cropping and resampling, (Z, Y, X).
        max_patch_size: per-axis cap, (Z, Y, X); each a multiple of ``grid``.
        grid: every axis is a multiple of this.

    Returns:
        The decision with patch size (Z, Y, X).
    """
    pairs = zip(median_shape, max_patch_size, strict=True)
    z, y, x = (min(int(cap), round_to_grid(length, grid)) for length, cap in pairs)
    shape_text = "x".join(f"{v:.0f}" for v in median_shape)
    cap_text = "x".join(str(v) for v in max_patch_size)
    return PatchSizeDecision(
        (z, y, x),
        f"pretraining patch {z}x{y}x{x} (Z x Y x X): the median resampled shape {shape_text} rounded to multiples of "
        f"{grid} (the lcm of the ViT token size {VIT_TOKEN_SIZE} and the Swin downsampling {SWIN_DOWNSAMPLING}), "
        f"capped at {cap_text}, which fits ViT-B/Swin-B pretraining on a 40-80 GB GPU.",
    )


def validate_patch_size(patch_size: Sequence[int], grid: int = PATCH_GRID) -> tuple[int, int, int]:
    """Check a user-given patch size (``--patch-size Z Y X``).

    Raises:
        NnsslError: not three positive multiples of ``grid``; names the nearest valid sizes per axis.
    """
    values = [int(v) for v in patch_size]
    if len(values) != 3:
        raise NnsslError(f"--patch-size needs three numbers Z Y X, got {list(patch_size)}")
    problems = []
    for axis, value in zip(AXIS_NAMES, values, strict=True):
        if value > 0 and value % grid == 0:
            continue
        below = max(grid, (value // grid) * grid)
        above = max(grid, -(-value // grid) * grid)
        nearest = f"{below}" if below == above else f"{below} or {above}"
        problems.append(f"{axis}={value} (nearest valid: {nearest})")
    if problems:
        suggestion = " ".join(str(round_to_grid(v, grid)) for v in values)
        raise NnsslError(f"--patch-size {' '.join(map(str, values))}: every axis must be a positive multiple of {grid} "
                         f"(the lcm of every encoder's grid): {', '.join(problems)}; try --patch-size {suggestion}")
    z, y, x = values
    return z, y, x


def override_patch_size(patch_size: Sequence[int], grid: int = PATCH_GRID) -> PatchSizeDecision:
    """A validated user-given pretraining patch size and its reason sentence."""
    z, y, x = validate_patch_size(patch_size, grid)
    return PatchSizeDecision((z, y, x),
                             f"pretraining patch {z}x{y}x{x} (Z x Y x X) was set by the user (--patch-size).")


def downstream_patch_size(pretraining_patch: Sequence[int]) -> PatchSizeDecision:
    """Recommended nnU-Net fine-tuning patch size: the pretraining patch.

    Fine-tuning on the pretraining crop size keeps the ViT's position embeddings and the Swin windows exactly as
    pretrained (no interpolation) and is already on the encoders' grid.
    """
    z, y, x = (int(v) for v in pretraining_patch)
    return PatchSizeDecision((z, y, x), f"downstream patch {z}x{y}x{x}: the pretraining patch, so the encoder's "
                                        "position embeddings and windows transfer to fine-tuning unchanged.")
