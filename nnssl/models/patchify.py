"""Voxel volume <-> per-token voxel vectors, for any channel count and any (non-cubic) grid."""
from __future__ import annotations

import torch


def patchify(x: torch.Tensor, token_size: tuple[int, int, int]) -> torch.Tensor:
    """Cut a volume into tokens of voxels, in the encoder's token order (z-major, x fastest).

    Args:
        x: Volume (B, C, D, H, W); each spatial size a multiple of ``token_size``.
        token_size: Voxels per token along (D, H, W).

    Returns:
        (B, N, P*C) with N = prod(grid), P = prod(token_size); channel is the fastest index.
    """
    b, c, d, h, w = x.shape
    td, th, tw = token_size
    gd, gh, gw = d // td, h // th, w // tw
    x = x.reshape(b, c, gd, td, gh, th, gw, tw)  # (B, C, gd, td, gh, th, gw, tw)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, gd, gh, gw, td, th, tw, C)
    return x.reshape(b, gd * gh * gw, td * th * tw * c)  # (B, N, P*C)


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int, int], token_size: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`.

    Args:
        tokens: (B, N, P*C).
        grid: Tokens per axis (gd, gh, gw), N = gd*gh*gw.
        token_size: Voxels per token along (D, H, W).

    Returns:
        Volume (B, C, gd*td, gh*th, gw*tw).
    """
    b = tokens.shape[0]
    gd, gh, gw = grid
    td, th, tw = token_size
    c = tokens.shape[-1] // (td * th * tw)
    x = tokens.reshape(b, gd, gh, gw, td, th, tw, c)  # (B, gd, gh, gw, td, th, tw, C)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, gd, td, gh, th, gw, tw)
    return x.reshape(b, c, gd * td, gh * th, gw * tw)  # (B, C, D, H, W)


def tokens_to_voxel_mask(mask: torch.Tensor, grid: tuple[int, int, int],
                         token_size: tuple[int, int, int]) -> torch.Tensor:
    """Expand a token mask to voxels.

    Args:
        mask: (B, N) bool, True = hidden.
        grid: Tokens per axis.
        token_size: Voxels per token.

    Returns:
        (B, 1, D, H, W) bool.
    """
    m = mask.reshape(mask.shape[0], 1, *grid)  # (B, 1, gd, gh, gw)
    for axis, repeat in enumerate(token_size):
        m = m.repeat_interleave(repeat, dim=axis + 2)
    return m  # (B, 1, D, H, W)
