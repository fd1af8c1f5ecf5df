"""patchify/unpatchify agree with the encoders' token order and invert each other."""
from __future__ import annotations

import torch

from nnssl.models.patchify import patchify, tokens_to_voxel_mask, unpatchify
from nnssl.models.registry import build_encoder

GRID = (2, 3, 4)
TOKEN = (4, 2, 8)


def _token_index_volume() -> torch.Tensor:
    """(1, 1, D, H, W) whose voxels hold the flat index of the token they belong to."""
    index = torch.arange(GRID[0] * GRID[1] * GRID[2], dtype=torch.float32).reshape(1, 1, *GRID)
    for axis, t in enumerate(TOKEN):
        index = index.repeat_interleave(t, dim=axis + 2)
    return index


def test_rows_are_tokens_in_flatten_order() -> None:
    tokens = patchify(_token_index_volume(), TOKEN)  # (1, N, P)
    expected = torch.arange(tokens.shape[1], dtype=torch.float32)[:, None].expand(-1, tokens.shape[2])
    torch.testing.assert_close(tokens[0], expected)


def test_round_trip_with_channels() -> None:
    x = torch.randn(2, 3, GRID[0] * TOKEN[0], GRID[1] * TOKEN[1], GRID[2] * TOKEN[2])
    torch.testing.assert_close(unpatchify(patchify(x, TOKEN), GRID, TOKEN), x)


def test_voxel_mask_matches_patchify() -> None:
    mask = torch.zeros(1, GRID[0] * GRID[1] * GRID[2], dtype=torch.bool)
    mask[0, [1, 7, 20]] = True
    voxels = tokens_to_voxel_mask(mask, GRID, TOKEN)  # (1, 1, D, H, W)
    assert torch.equal(patchify(voxels.float(), TOKEN)[0].bool().all(dim=1), mask[0])


def test_encoder_token_order_is_patchify_order() -> None:
    torch.manual_seed(0)
    encoder = build_encoder("vit_tiny", 1, (16, 24, 32))
    x = torch.randn(1, 1, 16, 24, 32)
    stem = encoder.down_projection(x).flatten(2).transpose(1, 2)  # (1, N, E)
    weight = encoder.down_projection.proj.weight.reshape(encoder.embed_dim, -1)  # (E, P), (d, h, w) order
    manual = patchify(x, encoder.token_size) @ weight.T + encoder.down_projection.proj.bias
    torch.testing.assert_close(stem, manual, rtol=1e-4, atol=1e-4)
