"""Reconstruction criteria that score only the masked (hidden / corrupted) voxels."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nnssl.config.enums import StrEnum


class ReconstructionLoss(StrEnum):
    """Per-voxel error: ``mse`` (MAE) or ``l1`` (SimMIM, Swin-UNETR in-painting, DAE)."""

    MSE = "mse"
    L1 = "l1"


_ERRORS = {
    ReconstructionLoss.MSE: lambda p, t: F.mse_loss(p, t, reduction="none"),
    ReconstructionLoss.L1: lambda p, t: F.l1_loss(p, t, reduction="none"),
}


def masked_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
                               kind: ReconstructionLoss | str = ReconstructionLoss.MSE) -> torch.Tensor:
    """Mean error over the masked voxels only (all voxels if ``mask`` is None).

    Args:
        pred: (B, C, D, H, W) or (B, N, P*C).
        target: Same shape as ``pred``.
        mask: Bool, broadcastable to ``pred`` (e.g. (B, 1, D, H, W) or (B, N, 1)), True = scored.
        kind: ``mse`` or ``l1``.

    Returns:
        Scalar; 0 when nothing is masked.
    """
    error = _ERRORS[ReconstructionLoss(kind)](pred.float(), target.float())  # same shape as pred
    if mask is None:
        return error.mean()
    weight = mask.expand_as(error).to(error.dtype)
    return (error * weight).sum() / weight.sum().clamp_min(1.0)
