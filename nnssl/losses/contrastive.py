"""NT-Xent (normalized temperature-scaled cross entropy), SimCLR's contrastive loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_TEMPERATURE = 0.5  # MONAI ContrastiveLoss / Swin-UNETR pretraining default


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """NT-Xent between two views (Chen et al. 2020, https://arxiv.org/abs/2002.05709).

    Sample i of ``z1`` and sample i of ``z2`` are positives; the other 2B - 2 embeddings are negatives.

    Args:
        z1: (B, F) embeddings of view 1.
        z2: (B, F) embeddings of view 2.
        temperature: Softmax temperature.

    Returns:
        Scalar, mean over the 2B anchors (same value as ``monai.losses.ContrastiveLoss``).
    """
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, F)
    logits = z @ z.T / temperature  # (2B, 2B)
    self_pairs = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))  # an anchor is never its own negative
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)  # (2B,)
    return F.cross_entropy(logits, positives)
