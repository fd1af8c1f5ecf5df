"""NT-Xent parity with MONAI's ContrastiveLoss (STYLE §20)."""
from __future__ import annotations

import pytest
import torch
from monai.losses import ContrastiveLoss

from nnssl.losses.contrastive import nt_xent


@pytest.mark.parametrize("batch", [1, 2, 7])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_matches_monai(batch: int, temperature: float) -> None:
    g = torch.Generator().manual_seed(batch)
    z1, z2 = torch.randn(batch, 16, generator=g), torch.randn(batch, 16, generator=g)
    expected = ContrastiveLoss(temperature=temperature)(z1, z2)
    torch.testing.assert_close(nt_xent(z1, z2, temperature), expected, rtol=1e-5, atol=1e-6)


def test_aligned_views_score_lower() -> None:
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    assert nt_xent(z, z) < nt_xent(z, z.roll(1, dims=0))
