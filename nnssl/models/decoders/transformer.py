"""Light MAE decoder: narrow EVA blocks over visible latents + mask tokens, linear to voxels per token."""
from __future__ import annotations

import math

import torch
from dynamic_network_architectures.building_blocks.eva import Eva
from torch import nn

from nnssl.errors import NnsslError

DEFAULT_DECODER_DIM = 192
DEFAULT_DECODER_DEPTH = 2
# Head width of the decoder; a multiple of 6 as Eva's 3D RoPE requires.
DECODER_HEAD_DIM = 48
MASK_TOKEN_INIT_STD = 0.02  # as MAE: normal_(std=.02) ~ timm's trunc_normal_


class TransformerDecoder(nn.Module):
    """MAE decoder (He et al. 2021, https://arxiv.org/abs/2111.06377) built from DNA's ``Eva``.

    Visible latents are projected to ``decoder_dim``, scattered into a full grid of learned mask tokens, run
    through ``depth`` EVA blocks (absolute + rotary position embedding over the full grid) and projected to the
    voxels of each token.

    Args:
        in_dim: Encoder token width E.
        grid_size: Tokens per axis.
        token_size: Voxels per token.
        out_channels: C of the reconstructed volume.
        decoder_dim: Width; a multiple of 48.
        depth: Number of blocks.
    """

    def __init__(self, in_dim: int, grid_size: tuple[int, int, int], token_size: tuple[int, int, int],
                 out_channels: int, decoder_dim: int = DEFAULT_DECODER_DIM, depth: int = DEFAULT_DECODER_DEPTH
                 ) -> None:
        super().__init__()
        if decoder_dim % DECODER_HEAD_DIM:
            raise NnsslError(f"decoder_dim {decoder_dim} must be a multiple of {DECODER_HEAD_DIM}")
        self.grid_size = tuple(grid_size)
        self.embed = nn.Linear(in_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        nn.init.normal_(self.mask_token, std=MASK_TOKEN_INIT_STD)
        self.blocks = Eva(embed_dim=decoder_dim, depth=depth, num_heads=decoder_dim // DECODER_HEAD_DIM,
                          ref_feat_shape=self.grid_size)
        self.head = nn.Linear(decoder_dim, math.prod(token_size) * out_channels)

    def forward(self, visible: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predict every token's voxels.

        Args:
            visible: (B, N_visible, E) encoder output for the visible tokens, ascending token order.
            mask: (B, N) bool, True = hidden.

        Returns:
            (B, N, P*C).
        """
        b, n = mask.shape
        latent = self.embed(visible)  # (B, N_vis, Dd)
        full = self.mask_token.to(latent.dtype).expand(b, n, -1).clone()  # (B, N, Dd)
        full[~mask] = latent.reshape(-1, latent.shape[-1])  # row-major = ascending visible order per sample
        decoded, _ = self.blocks(full)  # (B, N, Dd)
        return self.head(decoded)  # (B, N, P*C)
