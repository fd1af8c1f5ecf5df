"""The mask convention and the pure masking function."""
from __future__ import annotations

import math

import pytest
import torch

from nnssl.errors import NnsslError
from nnssl.methods.masking import num_hidden, random_token_mask
from nnssl.models.registry import build_encoder


@pytest.mark.parametrize("grid", [(4, 4, 4), (2, 3, 5), (1, 6, 4)])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.6, 0.75, 0.9])
@pytest.mark.parametrize("block_size", [1, 2, 3])
def test_exact_count_per_sample(grid: tuple[int, int, int], ratio: float, block_size: int) -> None:
    n = math.prod(grid)
    if round(ratio * n) >= n:
        pytest.skip("ratio hides every token of this grid")
    mask = random_token_mask(5, grid, ratio, torch.Generator().manual_seed(1), "cpu", block_size)
    assert mask.shape == (5, n) and mask.dtype == torch.bool
    assert mask.sum(dim=1).tolist() == [round(ratio * n)] * 5


def test_seeded_and_samples_differ() -> None:
    def draw(seed: int) -> torch.Tensor:
        return random_token_mask(4, (4, 4, 4), 0.75, torch.Generator().manual_seed(seed), "cpu")

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))
    mask = draw(0)
    assert not torch.equal(mask[0], mask[1])


def test_blocks_are_hidden_whole() -> None:
    grid, block = (4, 4, 4), 2
    ratio = 0.5  # 32 tokens = exactly 4 blocks of 2³
    mask = random_token_mask(3, grid, ratio, torch.Generator().manual_seed(0), "cpu", block)
    cubes = mask.reshape(3, 2, block, 2, block, 2, block).permute(0, 1, 3, 5, 2, 4, 6).reshape(3, 8, block**3)
    per_block = cubes.sum(dim=-1)  # (B, 8) hidden tokens per block
    assert set(per_block.unique().tolist()) <= {0, block**3}


def test_true_means_hidden_from_the_encoder() -> None:
    torch.manual_seed(0)
    encoder = build_encoder("vit_tiny", 1, (32, 32, 32))
    mask = random_token_mask(2, encoder.grid_size, 0.75, torch.Generator().manual_seed(0), "cpu")
    tokens = encoder.forward_features(torch.randn(2, 1, 32, 32, 32), mask)
    assert tokens.shape[1] == encoder.num_tokens - num_hidden(encoder.num_tokens, 0.75)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 0.99])
def test_bad_ratio(ratio: float) -> None:
    with pytest.raises(NnsslError, match="ratio"):
        random_token_mask(1, (2, 2, 2), ratio, None, "cpu")
