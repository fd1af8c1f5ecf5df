"""MAE: random token masking, encoder on visible tokens only, light transformer decoder, MSE on hidden voxels."""
from __future__ import annotations

import torch
from torch import nn

from nnssl.losses.reconstruction import ReconstructionLoss, masked_reconstruction_loss
from nnssl.methods.base import MethodOutput, SSLMethod, detached_previews
from nnssl.methods.masking import random_token_mask
from nnssl.methods.registry import register_method
from nnssl.models.decoders.transformer import (
    DECODER_HEAD_DIM,
    DEFAULT_DECODER_DEPTH,
    DEFAULT_DECODER_DIM,
    TransformerDecoder,
)
from nnssl.models.patchify import patchify, unpatchify

DEFAULT_MASK_RATIO = 0.75
NORM_PIX_EPS = 1e-6  # as MAE's per-patch normalization: (x - mean) / sqrt(var + eps)


@register_method("mae")
class MAE(SSLMethod):
    """Masked autoencoder (He et al. 2021, https://arxiv.org/abs/2111.06377) on 3D tokens.

    Args:
        encoder: An encoder with ``supports_token_drop`` (the ViTs).
        mask_ratio: Fraction of tokens hidden.
        block_size: Hide cubes of ``block_size``³ tokens together.
        decoder_dim: Decoder width (multiple of 48); default min(192, E rounded down to a multiple of 48).
        decoder_depth: Decoder blocks.
        norm_pix_loss: Target is each token's voxels normalized to zero mean / unit variance.
    """

    requires_token_drop = True

    def __init__(self, encoder: nn.Module, mask_ratio: float = DEFAULT_MASK_RATIO, block_size: int = 1,
                 decoder_dim: int | None = None, decoder_depth: int = DEFAULT_DECODER_DEPTH,
                 norm_pix_loss: bool = False) -> None:
        if decoder_dim is None:  # never wider than the encoder, as MAE's light decoder
            decoder_dim = max(DECODER_HEAD_DIM, min(DEFAULT_DECODER_DIM,
                                                    encoder.embed_dim // DECODER_HEAD_DIM * DECODER_HEAD_DIM))
        super().__init__(encoder, dict(mask_ratio=mask_ratio, block_size=block_size, decoder_dim=decoder_dim,
                                       decoder_depth=decoder_depth, norm_pix_loss=norm_pix_loss))
        self.mask_ratio = mask_ratio
        self.block_size = block_size
        self.norm_pix_loss = norm_pix_loss
        self.decoder = TransformerDecoder(encoder.embed_dim, encoder.grid_size, encoder.token_size,
                                          encoder.in_channels, decoder_dim, decoder_depth)

    def compute_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> MethodOutput:
        """x (B, C, D, H, W) -> MSE over the hidden tokens' voxels."""
        grid, token = self.encoder.grid_size, self.encoder.token_size
        mask = random_token_mask(x.shape[0], grid, self.mask_ratio, generator, x.device, self.block_size)  # (B, N)
        latent = self.encoder.forward_features(x, mask)  # (B, N_vis, E)
        pred = self.decoder(latent, mask).float()  # (B, N, P*C)
        target = patchify(x, token).float()  # (B, N, P*C)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)  # (B, N, 1)
            std = (target.var(dim=-1, keepdim=True) + NORM_PIX_EPS).sqrt()  # (B, N, 1)
            loss = masked_reconstruction_loss(pred, (target - mean) / std, mask[..., None], ReconstructionLoss.MSE)
            shown = pred * std + mean  # back to intensities for previews
        else:
            loss = masked_reconstruction_loss(pred, target, mask[..., None], ReconstructionLoss.MSE)
            shown = pred
        corrupted = unpatchify(target * (~mask[..., None]), grid, token)  # (B, C, D, H, W), hidden = 0
        reconstruction = unpatchify(torch.where(mask[..., None], shown, target), grid, token)  # (B, C, D, H, W)
        return MethodOutput(loss=loss, parts={"reconstruction": loss.detach()},
                            previews=detached_previews(x, corrupted, reconstruction, x))
