"""SimMIM: learned mask token replaces hidden tokens, encoder on all tokens, light head, L1 on hidden voxels."""
from __future__ import annotations

import torch
from torch import nn

from nnssl.losses.reconstruction import ReconstructionLoss, masked_reconstruction_loss
from nnssl.methods.base import MethodOutput, SSLMethod, detached_previews
from nnssl.methods.masking import random_token_mask
from nnssl.methods.registry import register_method
from nnssl.models.decoders.voxel_head import HeadKind, VoxelHead
from nnssl.models.patchify import tokens_to_voxel_mask

DEFAULT_MASK_RATIO = 0.6  # SimMIM paper's default
MASK_TOKEN_INIT_STD = 0.02


@register_method("simmim")
class SimMIM(SSLMethod):
    """SimMIM (Xie et al. 2022, https://arxiv.org/abs/2111.09886).

    Works with every encoder: the mask token is inserted after the stem (ViT: per 8³ token; Swin: over the
    stem grid inside each hidden 32³ output token).

    Args:
        encoder: Any registered encoder.
        mask_ratio: Fraction of output tokens hidden.
        block_size: Hide cubes of ``block_size``³ tokens together.
        head: Reconstruction head kind (see ``HeadKind``).
    """

    def __init__(self, encoder: nn.Module, mask_ratio: float = DEFAULT_MASK_RATIO, block_size: int = 1,
                 head: str = HeadKind.AUTO.value) -> None:
        super().__init__(encoder, dict(mask_ratio=mask_ratio, block_size=block_size, head=str(head)))
        self.mask_ratio = mask_ratio
        self.block_size = block_size
        self.mask_token = nn.Parameter(torch.zeros(encoder.stem_dim))
        nn.init.normal_(self.mask_token, std=MASK_TOKEN_INIT_STD)
        self.head = VoxelHead(encoder.embed_dim, encoder.grid_size, encoder.token_size, encoder.in_channels, head)

    def compute_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> MethodOutput:
        """x (B, C, D, H, W) -> L1 over the hidden tokens' voxels."""
        grid, token = self.encoder.grid_size, self.encoder.token_size
        mask = random_token_mask(x.shape[0], grid, self.mask_ratio, generator, x.device, self.block_size)  # (B, N)
        tokens = self.encoder.forward_features(x, mask, self.mask_token)  # (B, N, E)
        hidden = tokens_to_voxel_mask(mask, grid, token)  # (B, 1, D, H, W)
        corrupted = x.masked_fill(hidden, 0.0)  # (B, C, D, H, W): what the skip head's image path sees
        pred = self.head(tokens, corrupted).float()  # (B, C, D, H, W)
        loss = masked_reconstruction_loss(pred, x, hidden, ReconstructionLoss.L1)
        return MethodOutput(loss=loss, parts={"reconstruction": loss.detach()},
                            previews=detached_previews(x, corrupted, torch.where(hidden, pred, x), x))
