"""Swin-UNETR pretraining: in-painting + rotation prediction + contrastive coding, for Swin and ViT encoders."""
from __future__ import annotations

import torch
from torch import nn

from nnssl.errors import NnsslError
from nnssl.losses.contrastive import DEFAULT_TEMPERATURE, nt_xent
from nnssl.losses.reconstruction import ReconstructionLoss, masked_reconstruction_loss
from nnssl.losses.rotation import rotation_loss
from nnssl.methods.base import MethodOutput, SSLMethod, detached_previews
from nnssl.methods.perturbations import (
    NUM_QUARTER_TURNS,
    ROTATION_PLANE,
    drop_regions,
    random_quarter_turns,
    rotate_quarter_turns,
)
from nnssl.methods.registry import register_method
from nnssl.models.decoders.voxel_head import HeadKind, VoxelHead

DEFAULT_PROJECTION_DIM = 512  # Tang et al.'s contrastive head width
DEFAULT_NUM_REGIONS = 4
DEFAULT_REGION_MIN = 0.1
DEFAULT_REGION_MAX = 0.3


@register_method("swin_ssl")
class SwinSSL(SSLMethod):
    """Swin-UNETR self-supervised pretraining (Tang et al. 2022, https://arxiv.org/abs/2111.14791).

    Two views per sample, each rotated by a random multiple of 90° in the axial plane and corrupted by random
    noise boxes; the encoder sees all tokens of both; from the mean-pooled last tokens a linear head predicts the
    rotation (cross entropy) and a linear projection feeds NT-Xent between the views; a light head in-paints
    the boxes (L1 on the dropped voxels only). Loss = weighted sum.

    Args:
        encoder: Any registered encoder; its patch must have H == W (the rotation plane).
        inpaint_weight: Weight of the in-painting L1.
        rotation_weight: Weight of the rotation cross entropy.
        contrastive_weight: Weight of NT-Xent.
        temperature: NT-Xent temperature.
        projection_dim: Contrastive embedding width.
        num_regions: Noise boxes per view.
        region_min: Smallest box edge as a fraction of the axis.
        region_max: Largest box edge as a fraction of the axis.
        head: In-painting head kind.
    """

    def __init__(self, encoder: nn.Module, inpaint_weight: float = 1.0, rotation_weight: float = 1.0,
                 contrastive_weight: float = 1.0, temperature: float = DEFAULT_TEMPERATURE,
                 projection_dim: int = DEFAULT_PROJECTION_DIM, num_regions: int = DEFAULT_NUM_REGIONS,
                 region_min: float = DEFAULT_REGION_MIN, region_max: float = DEFAULT_REGION_MAX,
                 head: str = HeadKind.AUTO.value) -> None:
        super().__init__(encoder, dict(
            inpaint_weight=inpaint_weight, rotation_weight=rotation_weight, contrastive_weight=contrastive_weight,
            temperature=temperature, projection_dim=projection_dim, num_regions=num_regions, region_min=region_min,
            region_max=region_max, head=str(head)))
        size = tuple(encoder.patch_size)
        a, b = (axis - 2 for axis in ROTATION_PLANE)
        if size[a] != size[b]:
            raise NnsslError(f"swin_ssl rotates in the axial plane and needs patch H == W, got patch size {size}; "
                             f"use e.g. {(size[0], max(size[a], size[b]), max(size[a], size[b]))}")
        self.weights = {"inpaint": inpaint_weight, "rotation": rotation_weight, "contrastive": contrastive_weight}
        self.temperature = temperature
        self.num_regions, self.region_min, self.region_max = num_regions, region_min, region_max
        self.rotation_head = nn.Linear(encoder.embed_dim, NUM_QUARTER_TURNS)
        self.contrastive_head = nn.Linear(encoder.embed_dim, projection_dim)
        self.head = VoxelHead(encoder.embed_dim, encoder.grid_size, encoder.token_size, encoder.in_channels, head)

    def compute_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> MethodOutput:
        """x (B, C, D, H, W) -> weighted in-painting + rotation + contrastive loss over two views."""
        b = x.shape[0]
        turns = random_quarter_turns(2 * b, generator, x.device)  # (2B,) view 1 then view 2
        views = rotate_quarter_turns(torch.cat([x, x]), turns)  # (2B, C, D, H, W)
        corrupted, dropped = drop_regions(views, self.num_regions, self.region_min, self.region_max, generator)
        tokens = self.encoder.forward_features(corrupted)  # (2B, N, E)
        pooled = tokens.mean(dim=1)  # (2B, E)
        recon = self.head(tokens, corrupted).float()  # (2B, C, D, H, W)
        embeddings = self.contrastive_head(pooled)  # (2B, F)
        parts = {
            "inpaint": masked_reconstruction_loss(recon, views, dropped, ReconstructionLoss.L1),
            "rotation": rotation_loss(self.rotation_head(pooled), turns),
            "contrastive": nt_xent(embeddings[:b], embeddings[b:], self.temperature),
        }
        loss = sum(self.weights[name] * value for name, value in parts.items())
        return MethodOutput(
            loss=loss, parts={name: value.detach() for name, value in parts.items()},
            previews=detached_previews(x, corrupted[:b], torch.where(dropped[:b], recon[:b], views[:b]), views[:b]),
        )
