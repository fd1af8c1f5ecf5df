"""``PrimusSkip``: DNA's Primus ViT with a :class:`~nnssl.models.decoders.skip_decoder.SkipDecoder` instead of its
token-only ``PatchDecode``: the fine-tuning network of ``SSLViTTrainer``.

The encoder is Primus' own (``down_projection`` + ``eva`` + ``register_tokens``, same keys, so an nnssl ViT encoder
loads 1:1 and DNA's ``key_to_encoder``/``key_to_stem`` still describe it); only the decoder differs. Why a skip path:
on the tuning phantoms, 360 steps from scratch at k = 2 give 85 Dice with it and 0 with ``PatchDecode``
(``docs/benchmark_phantoms/tuning``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from dynamic_network_architectures.architectures.primus import Primus

from nnssl.models.decoders.skip_decoder import SKIP_CHANNELS, SkipDecoder

DECODER_KEY = "decoder"  # where the SkipDecoder lives in this network (simmim keeps it at head.proj)


class PrimusSkip(Primus):
    """Primus encoder + convolutional skip decoder.

    Args:
        input_channels: C.
        num_classes: output channels.
        input_shape: patch size (D, H, W), a multiple of ``patch_embed_size``.
        embed_dim, patch_embed_size, eva_depth, eva_numheads: as DNA ``Primus``.
        skip_channels: image-path widths of the decoder, finest level first.
        **primus_kwargs: the rest of DNA ``Primus``' arguments (RoPE, drop path, register tokens, ...).
    """

    def __init__(self, input_channels: int, num_classes: int, input_shape: Sequence[int], embed_dim: int,
                 patch_embed_size: Sequence[int], eva_depth: int, eva_numheads: int,
                 skip_channels: Sequence[int] = SKIP_CHANNELS, **primus_kwargs: object) -> None:
        super().__init__(input_channels=input_channels, embed_dim=embed_dim, patch_embed_size=tuple(patch_embed_size),
                         num_classes=num_classes, eva_depth=eva_depth, eva_numheads=eva_numheads,
                         input_shape=tuple(input_shape), **primus_kwargs)
        del self.up_projection  # Primus' token-only decoder; replaced below
        self.decoder = SkipDecoder(input_channels, embed_dim, patch_embed_size, num_classes, skip_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> (B, num_classes, D, H, W)."""
        tokens = self.down_projection(x)  # (B, E, gd, gh, gw)
        b, e, *grid = tokens.shape
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, N, E), Primus' token order
        if self.register_tokens is not None:
            tokens = torch.cat((self.register_tokens.expand(b, -1, -1), tokens), dim=1)  # (B, R+N, E)
        tokens, _ = self.eva(tokens)  # (B, R+N, E)
        if self.register_tokens is not None:
            tokens = tokens[:, self.register_tokens.shape[1]:]  # (B, N, E)
        volume = tokens.transpose(1, 2).reshape(b, e, *grid)  # (B, E, gd, gh, gw)
        return self.decoder(volume, x)  # (B, num_classes, D, H, W)
