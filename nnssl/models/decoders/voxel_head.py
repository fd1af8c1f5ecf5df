"""Heads from encoder tokens back to voxels: linear per token (SimMIM), DNA's ``PatchDecode``, or the fine-tuning
network's :class:`~nnssl.models.decoders.skip_decoder.SkipDecoder` (which also reads the corrupted image)."""
from __future__ import annotations

import math

import torch
from dynamic_network_architectures.building_blocks.patch_encode_decode import PatchDecode
from torch import nn

from nnssl.config.enums import StrEnum
from nnssl.models.decoders.skip_decoder import SkipDecoder
from nnssl.models.patchify import unpatchify

# "auto" uses the linear head up to 8³ voxels per token; above (e.g. Swin's 32³ tokens) a linear layer would
# need prod(token) * E weights (25M for swin_b), so the progressive transposed-conv decoder is used instead.
LINEAR_HEAD_MAX_VOXELS = 8**3


class HeadKind(StrEnum):
    """``linear``: one linear layer per token + pixel shuffle (SimMIM's head). ``conv``: DNA ``PatchDecode``
    (stride-2 transposed convs with LayerNorm + GELU, Primus' decoder). ``skip``: ``SkipDecoder``, the decoder of
    ``SSLViTTrainer``'s network, so fine-tuning loads it pretrained. ``auto``: linear for small tokens."""

    AUTO = "auto"
    LINEAR = "linear"
    CONV = "conv"
    SKIP = "skip"


class VoxelHead(nn.Module):
    """Tokens (B, N, E) on a known grid -> volume (B, C, D, H, W).

    Args:
        embed_dim: E.
        grid_size: Tokens per axis.
        token_size: Voxels per token (powers of two for ``conv``).
        out_channels: C.
        kind: See :class:`HeadKind`.
    """

    def __init__(self, embed_dim: int, grid_size: tuple[int, int, int], token_size: tuple[int, int, int],
                 out_channels: int, kind: HeadKind | str = HeadKind.AUTO) -> None:
        super().__init__()
        kind = HeadKind(kind)
        if kind == HeadKind.AUTO:
            kind = HeadKind.LINEAR if math.prod(token_size) <= LINEAR_HEAD_MAX_VOXELS else HeadKind.CONV
        self.kind = kind
        self.grid_size = tuple(grid_size)
        self.token_size = tuple(token_size)
        self.proj: nn.Module
        if kind == HeadKind.LINEAR:
            self.proj = nn.Linear(embed_dim, math.prod(token_size) * out_channels)
        elif kind == HeadKind.SKIP:
            self.proj = SkipDecoder(out_channels, embed_dim, self.token_size, out_channels)
        else:
            self.proj = PatchDecode(self.token_size, embed_dim, out_channels)

    @property
    def transferable(self) -> nn.Module | None:
        """The part fine-tuning loads (the ``SkipDecoder``), or None for the pretraining-only heads."""
        return self.proj if self.kind == HeadKind.SKIP else None

    def forward(self, tokens: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, N, E) [and, for ``skip``, the encoder's input image (B, C, D, H, W)] -> (B, C, D, H, W)."""
        if self.kind == HeadKind.LINEAR:
            return unpatchify(self.proj(tokens), self.grid_size, self.token_size)  # (B, C, D, H, W)
        volume = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid_size)  # (B, E, g...)
        if self.kind == HeadKind.SKIP:
            if image is None:
                raise ValueError("the skip head needs the image the encoder saw")
            return self.proj(volume, image)  # (B, C, D, H, W)
        return self.proj(volume)  # (B, C, D, H, W)
