"""DAE / Swin-UNETR SSL corruptions: pure, seeded, and doing what they say."""
from __future__ import annotations

import pytest
import torch

from nnssl.errors import NnsslError
from nnssl.methods.perturbations import (
    NUM_QUARTER_TURNS,
    add_gaussian_noise,
    down_up_sample,
    drop_regions,
    local_mask,
    random_quarter_turns,
    rotate_quarter_turns,
)

SHAPE = (3, 2, 8, 16, 16)


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def test_quarter_turns() -> None:
    x = _x()
    turns = random_quarter_turns(x.shape[0], torch.Generator().manual_seed(0), "cpu")
    assert turns.dtype == torch.int64 and bool(((turns >= 0) & (turns < NUM_QUARTER_TURNS)).all())
    rotated = rotate_quarter_turns(x, turns)
    torch.testing.assert_close(rotate_quarter_turns(rotated, (NUM_QUARTER_TURNS - turns) % NUM_QUARTER_TURNS), x)
    once = rotate_quarter_turns(x, torch.ones(3, dtype=torch.int64))
    torch.testing.assert_close(once[0, :, :, 0, :], x[0, :, :, :, -1])  # first row <- last column
    with pytest.raises(NnsslError, match="equal sizes"):
        rotate_quarter_turns(torch.zeros(1, 1, 8, 8, 16), torch.zeros(1, dtype=torch.int64))


def test_noise_is_seeded_with_the_requested_std() -> None:
    x = torch.zeros(2, 1, 32, 32, 32)
    a = add_gaussian_noise(x, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(a, add_gaussian_noise(x, 0.3, torch.Generator().manual_seed(0)))
    assert a.std().item() == pytest.approx(0.3, rel=0.02)


def test_down_up_keeps_smooth_and_removes_fine_detail() -> None:
    smooth = torch.linspace(0, 1, 16).expand(1, 1, 16, 16, 16).contiguous()
    torch.testing.assert_close(down_up_sample(torch.ones(1, 1, 8, 8, 8), 2), torch.ones(1, 1, 8, 8, 8))
    checker = (torch.arange(16)[:, None, None] + torch.arange(16)[None, :, None] + torch.arange(16)) % 2
    checker = checker.float()[None, None]
    assert down_up_sample(checker, 2).std() < 0.01 * checker.std()
    assert (down_up_sample(smooth, 2) - smooth).abs().max() < 0.1


def test_local_mask_hides_an_exact_fraction_of_cubes() -> None:
    x = _x() + 10  # no voxel is 0 before masking
    masked, mask = local_mask(x, 4, 0.5, torch.Generator().manual_seed(0))
    assert mask.shape == (3, 1, 8, 16, 16)
    assert mask.float().mean(dim=(1, 2, 3, 4)).tolist() == [0.5] * 3
    assert torch.equal(masked == 0, mask.expand_as(x))


def test_drop_regions_replaces_only_the_masked_boxes() -> None:
    x = _x()
    corrupted, mask = drop_regions(x, 3, 0.2, 0.5, torch.Generator().manual_seed(0))
    again, mask_again = drop_regions(x, 3, 0.2, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(corrupted, again) and torch.equal(mask, mask_again)
    assert 0 < mask.float().mean() < 1
    assert torch.equal(corrupted[~mask.expand_as(x)], x[~mask.expand_as(x)])
    assert not torch.equal(corrupted[mask.expand_as(x)], x[mask.expand_as(x)])
    with pytest.raises(NnsslError, match="fractions"):
        drop_regions(x, 1, 0.6, 0.5, None)
