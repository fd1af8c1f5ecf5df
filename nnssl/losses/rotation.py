"""Rotation prediction: cross entropy over the number of 90° turns (Swin-UNETR pretraining)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rotation_loss(logits: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Cross entropy of predicted rotation classes.

    Args:
        logits: (B, K) scores for K rotation classes (K = 4: 0/90/180/270°).
        turns: (B,) int64 true class.

    Returns:
        Scalar.
    """
    return F.cross_entropy(logits.float(), turns)
