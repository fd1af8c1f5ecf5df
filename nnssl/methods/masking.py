"""The one mask convention (STYLE §6) and the pure masking function (STYLE §7).

A mask is a bool tensor (B, N) over patch tokens in the encoder's token order; True = hidden from the encoder.
Token indices never count prefix/register tokens.
"""
from __future__ import annotations

import math

import torch

from nnssl.errors import NnsslError
from nnssl.methods.sampling import uniform


def num_hidden(num_tokens: int, ratio: float) -> int:
    """round(ratio * N): the exact number of hidden tokens per sample."""
    return int(round(ratio * num_tokens))


def random_token_mask(batch: int, grid: tuple[int, int, int], ratio: float, generator: torch.Generator | None,
                      device: torch.device | str, block_size: int = 1) -> torch.Tensor:
    """Hide exactly ``round(ratio * N)`` tokens per sample, optionally in cubes of ``block_size``³ tokens.

    With ``block_size > 1`` whole blocks are hidden in random order; the last block drawn may be hidden only in
    part, so the count stays exact.

    Args:
        batch: B.
        grid: Tokens per axis (gd, gh, gw), N = gd * gh * gw.
        ratio: Fraction hidden, in [0, 1).
        generator: Source of randomness (any device) or None for the global one.
        device: Device of the returned mask.
        block_size: Edge of the token blocks hidden together.

    Returns:
        (B, N) bool, True = hidden.

    Raises:
        NnsslError: ratio outside [0, 1), or a ratio that hides every token.
    """
    n = math.prod(grid)
    if not 0.0 <= ratio < 1.0:
        raise NnsslError(f"mask ratio {ratio} must be in [0, 1)")
    if block_size < 1:
        raise NnsslError(f"mask block size {block_size} must be >= 1")
    hide = num_hidden(n, ratio)
    if hide >= n:
        raise NnsslError(f"mask ratio {ratio} hides all {n} tokens of grid {grid}; lower it or use a larger patch")
    token_score = uniform((batch, n), generator, device)  # (B, N)
    blocks = [math.ceil(g / block_size) for g in grid]
    block_score = uniform((batch, *blocks), generator, device)  # (B, bd, bh, bw)
    for axis, g in enumerate(grid):
        block_score = block_score.repeat_interleave(block_size, dim=axis + 1).narrow(axis + 1, 0, g)
    block_score = block_score.reshape(batch, n)  # (B, N), equal inside a block
    # Order by block score, ties (same block) broken by the token score: a stable sort of a token-sorted order.
    by_token = torch.argsort(token_score, dim=1)  # (B, N)
    by_block = torch.sort(torch.gather(block_score, 1, by_token), dim=1, stable=True).indices  # (B, N)
    order = torch.gather(by_token, 1, by_block)  # (B, N) token indices, hidden first
    mask = torch.zeros(batch, n, dtype=torch.bool, device=device)
    mask.scatter_(1, order[:, :hide], True)
    return mask
