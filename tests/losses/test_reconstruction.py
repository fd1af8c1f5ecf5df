"""Masked reconstruction losses score only the masked voxels."""
from __future__ import annotations

import pytest
import torch

from nnssl.losses.reconstruction import ReconstructionLoss, masked_reconstruction_loss

SHAPE = (2, 1, 4, 4, 4)


@pytest.mark.parametrize("kind", list(ReconstructionLoss))
def test_unmasked_voxels_do_not_count(kind: ReconstructionLoss) -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    mask = torch.rand(SHAPE, generator=g) < 0.4
    loss = masked_reconstruction_loss(pred, target, mask, kind)
    changed = torch.where(mask, pred, pred + 100 * torch.randn(SHAPE, generator=g))
    torch.testing.assert_close(masked_reconstruction_loss(changed, target, mask, kind), loss)
    worse = torch.where(mask, pred + 1, pred)
    assert masked_reconstruction_loss(worse, target, mask, kind) != loss


def test_hand_computed_values() -> None:
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    target = torch.zeros(1, 4)
    mask = torch.tensor([[True, False, True, False]])
    assert masked_reconstruction_loss(pred, target, mask, "mse").item() == pytest.approx((1 + 9) / 2)
    assert masked_reconstruction_loss(pred, target, mask, "l1").item() == pytest.approx((1 + 3) / 2)
    assert masked_reconstruction_loss(pred, target, None, "l1").item() == pytest.approx(10 / 4)
    assert masked_reconstruction_loss(pred, target, mask[..., :1].expand(1, 4) & False, "l1").item() == 0.0
