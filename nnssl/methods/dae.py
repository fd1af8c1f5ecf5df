"""Disruptive Autoencoder: reconstruct the clean volume from local masking + noise + down-then-up sampling."""
from __future__ import annotations

import torch
from torch import nn

from nnssl.errors import NnsslError
from nnssl.losses.reconstruction import ReconstructionLoss, masked_reconstruction_loss
from nnssl.methods.base import MethodOutput, SSLMethod, detached_previews
from nnssl.methods.perturbations import add_gaussian_noise, down_up_sample, local_mask
from nnssl.methods.registry import register_method
from nnssl.models.decoders.voxel_head import HeadKind, VoxelHead

# Our defaults (the paper tunes them per dataset): 4³-voxel cubes are "local" next to 8³ ViT tokens.
DEFAULT_MASK_CUBE = 4
DEFAULT_MASK_RATIO = 0.5
DEFAULT_NOISE_STD = 0.1  # inputs are z-normalized CT, so 0.1 of the body's intensity spread
DEFAULT_DOWN_FACTOR = 2


@register_method("dae")
class DAE(SSLMethod):
    """Disruptive Autoencoders (Valanarasu et al. 2023, https://arxiv.org/abs/2307.16896).

    The input is disrupted by down-then-up sampling, additive Gaussian noise and local masking (each
    toggleable, applied in that order); the encoder sees all tokens; a light head reconstructs the clean input;
    the loss covers every voxel.

    Args:
        encoder: Any registered encoder.
        use_local_mask: Zero out random local cubes.
        mask_cube: Cube edge in voxels.
        mask_ratio: Fraction of cubes zeroed.
        use_noise: Add Gaussian noise.
        noise_std: Its standard deviation.
        use_down_up: Downsample then upsample.
        down_factor: Downsampling factor.
        loss: ``l1`` or ``mse``.
        head: Reconstruction head kind.
    """

    def __init__(self, encoder: nn.Module, use_local_mask: bool = True, mask_cube: int = DEFAULT_MASK_CUBE,
                 mask_ratio: float = DEFAULT_MASK_RATIO, use_noise: bool = True, noise_std: float = DEFAULT_NOISE_STD,
                 use_down_up: bool = True, down_factor: int = DEFAULT_DOWN_FACTOR, loss: str = "l1",
                 head: str = HeadKind.AUTO.value) -> None:
        super().__init__(encoder, dict(use_local_mask=use_local_mask, mask_cube=mask_cube, mask_ratio=mask_ratio,
                                       use_noise=use_noise, noise_std=noise_std, use_down_up=use_down_up,
                                       down_factor=down_factor, loss=str(loss), head=str(head)))
        if not (use_local_mask or use_noise or use_down_up):
            raise NnsslError("dae needs at least one perturbation: enable use_local_mask, use_noise or use_down_up")
        for name, divisor in (("mask_cube", mask_cube), ("down_factor", down_factor)):
            if any(p % divisor for p in encoder.patch_size):
                raise NnsslError(f"dae {name}={divisor} must divide the patch size {tuple(encoder.patch_size)}")
        self.use_local_mask, self.mask_cube, self.mask_ratio = use_local_mask, mask_cube, mask_ratio
        self.use_noise, self.noise_std = use_noise, noise_std
        self.use_down_up, self.down_factor = use_down_up, down_factor
        self.loss_kind = ReconstructionLoss(loss)
        self.head = VoxelHead(encoder.embed_dim, encoder.grid_size, encoder.token_size, encoder.in_channels, head)

    def disrupt(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The enabled perturbations: (B, C, D, H, W) -> same."""
        if self.use_down_up:
            x = down_up_sample(x, self.down_factor)
        if self.use_noise:
            x = add_gaussian_noise(x, self.noise_std, generator)
        if self.use_local_mask:
            x, _ = local_mask(x, self.mask_cube, self.mask_ratio, generator)
        return x

    def compute_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> MethodOutput:
        """x (B, C, D, H, W) -> reconstruction error of the clean x from its disrupted copy."""
        corrupted = self.disrupt(x, generator)  # (B, C, D, H, W)
        pred = self.head(self.encoder.forward_features(corrupted), corrupted).float()  # (B, C, D, H, W)
        loss = masked_reconstruction_loss(pred, x, None, self.loss_kind)
        return MethodOutput(loss=loss, parts={"reconstruction": loss.detach()},
                            previews=detached_previews(x, corrupted, pred, x))
