"""Primus-style ViT encoder: DNA's ``PatchEmbed`` + ``Eva``, loadable 1:1 into DNA ``Primus``.

Primus: Isensee et al. 2025, https://arxiv.org/abs/2503.01835. The module holds ``down_projection`` and ``eva``
built with exactly the arguments ``dynamic_network_architectures.architectures.primus.Primus`` uses, so its
state-dict keys equal Primus' ``down_projection.*`` and ``eva.*`` keys (encoder prefix ``""``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from dynamic_network_architectures.building_blocks.eva import Eva
from dynamic_network_architectures.building_blocks.patch_encode_decode import PatchEmbed
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from timm.layers import apply_keep_indices_nlc
from torch import nn
from torch.utils.checkpoint import checkpoint

from nnssl.errors import NnsslError
from nnssl.models.encoders.base import Encoder, check_patch_size
from nnssl.models.registry import register_encoder
from nnssl.models.transfer import TransferContract

TOKEN_SIZE = (8, 8, 8)
# DNA Primus defaults, repeated so that config() records them (tests compare with DNA's table).
PRIMUS_MLP_RATIO = 4 * 2 / 3
# Primus initializes its conv stem with He init, negative slope 1e-2.
STEM_INIT_NEG_SLOPE = 1e-2
# Eva's 3D RoPE splits each head into 3 axes: head_dim must be 1.5 * a multiple of 4.
ROPE_HEAD_DIM_MULTIPLE = 6
REGISTER_TOKEN_INIT_STD = 1e-6

VIT_VARIANTS = {  # DNA _PRIMUS_CONFIGS S/B/M/L; vit_tiny for tests and demos
    "primus_s": {"embed_dim": 396, "depth": 12, "num_heads": 6},
    "primus_b": {"embed_dim": 792, "depth": 12, "num_heads": 12},
    "primus_m": {"embed_dim": 864, "depth": 16, "num_heads": 12},
    "primus_l": {"embed_dim": 1056, "depth": 24, "num_heads": 16},
    "vit_tiny": {"embed_dim": 96, "depth": 2, "num_heads": 4},
}


def _register_variants(cls: type) -> type:
    for name, variant in VIT_VARIANTS.items():
        register_encoder(name, **variant)(cls)
    return cls


@_register_variants
class ViTEncoder(Encoder):
    """Primus-style ViT: non-overlapping 8³ conv patch embedding, EVA-02 blocks (abs pos embed + 3D RoPE, SwiGLU).

    Args:
        in_channels: Input channels C.
        patch_size: Pretraining crop (D, H, W), a multiple of ``token_size`` per axis.
        embed_dim: E.
        depth: Number of EVA blocks.
        num_heads: Attention heads; E / num_heads must be a multiple of 6 (3D RoPE).
        token_size: Voxels per token.
        num_register_tokens: Prefix tokens (never counted by masks).
        drop_path_rate: Stochastic depth (linear over depth).
        use_rot_pos_emb: 3D rotary embedding in attention.
        use_abs_pos_embed: Learned absolute position embedding.
        mlp_ratio: SwiGLU hidden ratio.
        init_values: LayerScale init, None = off.
        scale_attn_inner: Norm inside attention (Primus V3 style).
        registry_name: Name in the encoder registry (set by ``build_encoder``; not part of ``config()`` kwargs).
    """

    supports_token_drop = True

    def __init__(self, in_channels: int, patch_size: Sequence[int], embed_dim: int, depth: int, num_heads: int,
                 token_size: Sequence[int] = TOKEN_SIZE, num_register_tokens: int = 0, drop_path_rate: float = 0.0,
                 use_rot_pos_emb: bool = True, use_abs_pos_embed: bool = True,
                 mlp_ratio: float = PRIMUS_MLP_RATIO, init_values: float | None = None,
                 scale_attn_inner: bool = False, registry_name: str | None = None) -> None:
        super().__init__()
        self.registry_name = registry_name
        self._record_config(dict(
            in_channels=in_channels, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            token_size=token_size, num_register_tokens=num_register_tokens, drop_path_rate=drop_path_rate,
            use_rot_pos_emb=use_rot_pos_emb, use_abs_pos_embed=use_abs_pos_embed, mlp_ratio=mlp_ratio,
            init_values=init_values, scale_attn_inner=scale_attn_inner))
        self.token_size = tuple(int(t) for t in token_size)  # type: ignore[assignment]
        self.patch_size = check_patch_size(patch_size, self.token_size, self.registry_name or type(self).__name__)
        if embed_dim % num_heads or (embed_dim // num_heads) % ROPE_HEAD_DIM_MULTIPLE:
            raise NnsslError(f"ViT embed_dim {embed_dim} / num_heads {num_heads} must be a multiple of "
                             f"{ROPE_HEAD_DIM_MULTIPLE} (3D rotary embedding); pick another embed_dim or num_heads")
        self.in_channels = in_channels
        self.grid_size = tuple(p // t for p, t in zip(self.patch_size, self.token_size, strict=True))  # type: ignore[assignment]
        self.embed_dim = self.stem_dim = embed_dim
        self.num_prefix_tokens = num_register_tokens
        self.transfer = TransferContract(encoder_prefix="", stem_keys=("down_projection.proj.weight",),
                                         pos_embed_key="eva.pos_embed" if use_abs_pos_embed else None)

        self.down_projection = PatchEmbed(self.token_size, in_channels, embed_dim)
        self.eva = Eva(
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, ref_feat_shape=self.grid_size,
            num_reg_tokens=num_register_tokens, use_rot_pos_emb=use_rot_pos_emb, use_abs_pos_emb=use_abs_pos_embed,
            mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate, init_values=init_values,
            scale_attn_inner=scale_attn_inner,
        )
        if num_register_tokens > 0:  # same attribute name as Primus, so the key matches
            self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
            nn.init.normal_(self.register_tokens, std=REGISTER_TOKEN_INIT_STD)
        else:
            self.register_tokens = None
        self.down_projection.apply(InitWeights_He(STEM_INIT_NEG_SLOPE))

    def _embed(self, x: torch.Tensor, mask: torch.Tensor | None,
               mask_token: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stem, prefix tokens and position embeddings, as Eva's ``_pos_embed``; token drop gathers first."""
        if tuple(x.shape[2:]) != self.patch_size:
            raise ValueError(f"input spatial shape {tuple(x.shape[2:])} != encoder patch size {self.patch_size}")
        rope = self.eva.rope.get_embed() if self.eva.rope is not None else None  # (N, rope_dim)
        pos_embed = self.eva.pos_embed  # (1, R+N, E) or None
        if mask is not None and mask_token is None:
            keep = _keep_indices(mask)  # (B, N_visible)
            tokens = self._embed_visible(x, keep)  # (B, N_vis, E)
            if pos_embed is not None:
                patch_pos = pos_embed[:, self.num_prefix_tokens:].expand(x.shape[0], -1, -1)  # (B, N, E)
                patch_pos = torch.gather(patch_pos, 1, keep[..., None].expand(-1, -1, patch_pos.shape[-1]))
                pos_embed = torch.cat([pos_embed[:, :self.num_prefix_tokens].expand(x.shape[0], -1, -1),
                                       patch_pos], dim=1)  # (B, R+N_vis, E)
            if rope is not None:  # timm's helper for Eva's patch dropout: per-sample RoPE rows
                rope = apply_keep_indices_nlc(tokens, rope, keep)  # (B, N_vis, rope_dim)
                rope = rope.unsqueeze(1)  # (B, 1, N_vis, rope_dim): broadcast over heads, as timm's Eva does
        else:
            tokens = self.down_projection(x)  # (B, E, gd, gh, gw)
            tokens = tokens.flatten(2).transpose(1, 2)  # (B, N, E), Primus' "b c w h d -> b (w h d) c" order
            if mask is not None:
                tokens = torch.where(mask[..., None], mask_token.to(tokens.dtype), tokens)  # (B, N, E)
        if self.register_tokens is not None:
            tokens = torch.cat((self.register_tokens.expand(tokens.shape[0], -1, -1), tokens), dim=1)  # (B, R+N', E)
        if pos_embed is not None:
            tokens = tokens + pos_embed
        return self.eva.pos_drop(tokens), rope

    def _embed_visible(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The stem on the visible tokens only: its stride = kernel conv is a linear map per token.

        Args:
            x: (B, C, D, H, W).
            keep: (B, N_visible) token indices.

        Returns:
            (B, N_visible, E), equal to the gathered output of ``down_projection``.
        """
        b, c = x.shape[:2]
        (gd, gh, gw), (td, th, tw) = self.grid_size, self.token_size
        patches = x.reshape(b, c, gd, td, gh, th, gw, tw).permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, gd, gh, gw, C, t..)
        patches = patches.reshape(b, gd * gh * gw, -1)  # (B, N, C*P) in the conv weight's (C, td, th, tw) order
        patches = torch.gather(patches, 1, keep[..., None].expand(-1, -1, patches.shape[-1]))  # (B, N_vis, C*P)
        proj = self.down_projection.proj
        return torch.nn.functional.linear(patches, proj.weight.flatten(1), proj.bias)  # (B, N_vis, E)

    def _blocks(self, tokens: torch.Tensor, rope: torch.Tensor | None, collect: set[int] | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        collected = []
        for i, block in enumerate(self.eva.blocks):
            if self.eva.grad_checkpointing and self.training:
                tokens = checkpoint(block, tokens, rope=rope, use_reentrant=False)
            else:
                tokens = block(tokens, rope=rope)  # (B, R+N', E)
            if collect is not None and i in collect:
                collected.append(tokens[:, self.num_prefix_tokens:])
        return tokens, collected

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                         mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, D, H, W) -> (B, N_visible or N, E); see :meth:`Encoder.forward_features`."""
        tokens, rope = self._embed(x, mask, mask_token)  # (B, R+N', E)
        tokens, _ = self._blocks(tokens, rope)
        tokens = self.eva.norm(tokens)
        return tokens[:, self.num_prefix_tokens:]  # (B, N', E)

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Outputs of the EVA blocks ``indices`` (negative = from the end), each (B, E, gd, gh, gw)."""
        depth = len(self.eva.blocks)
        wanted = [i % depth for i in indices]
        tokens, rope = self._embed(x, None, None)
        _, collected = self._blocks(tokens, rope, set(wanted))
        by_index = dict(zip(sorted(set(wanted)), collected, strict=True))
        return [self.tokens_to_volume(by_index[i]) for i in wanted]


def _keep_indices(mask: torch.Tensor) -> torch.Tensor:
    """(B, N) bool, True = hidden -> (B, N_visible) ascending indices of visible tokens."""
    visible = (~mask).sum(dim=1)
    if bool((visible != visible[0]).any()):
        raise ValueError("token drop needs the same number of visible tokens in every sample")
    # A stable sort puts the visible tokens (key 0) first, in ascending order.
    order = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices  # (B, N)
    return order[:, : int(visible[0])]
