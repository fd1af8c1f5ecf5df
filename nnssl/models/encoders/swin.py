"""Swin encoder: MONAI's ``SwinTransformer`` exactly as ``SwinUNETR.swinViT`` builds it.

Swin UNETR: Hatamizadeh et al. 2022, https://arxiv.org/abs/2201.01266; pretraining: Tang et al. 2022,
https://arxiv.org/abs/2111.14791. The class *is* a MONAI ``SwinTransformer`` (subclass), so its state-dict keys
load under ``swinViT.`` into ``monai.networks.nets.SwinUNETR`` built with the same feature size and depths.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets.swin_unetr import SwinTransformer

from nnssl.errors import NnsslError
from nnssl.models.encoders.base import Encoder, check_patch_size
from nnssl.models.registry import register_encoder
from nnssl.models.transfer import TransferContract

SWIN_UNETR_WINDOW = 7
SWIN_UNETR_STEM_PATCH = 2
SWIN_UNETR_DEPTHS = (2, 2, 2, 2)
SWIN_UNETR_HEADS = (3, 6, 12, 24)
SWIN_UNETR_MLP_RATIO = 4.0
# Each stage ends in a patch merging that halves the grid and doubles the channels.
STAGE_DOWNSAMPLE = 2
# SwinUNETR requires feature_size % 12 == 0.
FEATURE_SIZE_MULTIPLE = 12

SWIN_VARIANTS = {  # feature sizes of MONAI's released Swin-UNETR SSL weights: tiny f12, small f24, base f48
    "swin_t": {"feature_size": 12},
    "swin_s": {"feature_size": 24},
    "swin_b": {"feature_size": 48},
    # tests and demos: window 4 instead of 7 is ~8x faster on CPU (MONAI pads every stage to the window)
    "swin_tiny": {"feature_size": 12, "depths": (1, 1, 1, 1), "window_size": 4},
}


def _register_variants(cls: type) -> type:
    for name, variant in SWIN_VARIANTS.items():
        register_encoder(name, **variant)(cls)
    return cls


@_register_variants
class SwinEncoder(SwinTransformer, Encoder):
    """MONAI Swin Transformer (Swin-UNETR's ``swinViT``) with the nnssl encoder interface.

    Output tokens are the last stage's (after its patch merging), i.e. stride ``stem_patch * 2**len(depths)``
    (32 with the defaults), E = 16 * feature_size, layer-normed as SwinUNETR normalizes them.

    Args:
        in_channels: Input channels C.
        patch_size: Pretraining crop (D, H, W), a multiple of 32 (with the defaults) per axis.
        feature_size: Stem channels (SwinUNETR ``feature_size``), a multiple of 12.
        depths: Blocks per stage.
        num_heads: Heads per stage.
        window_size: Attention window (isotropic).
        stem_patch: Patch-embedding stride (isotropic).
        drop_path_rate: Stochastic depth.
        use_checkpoint: Gradient checkpointing in MONAI's blocks.
        registry_name: Name in the encoder registry (set by ``build_encoder``; not part of ``config()`` kwargs).
    """

    supports_token_drop = False

    def __init__(self, in_channels: int, patch_size: Sequence[int], feature_size: int,
                 depths: Sequence[int] = SWIN_UNETR_DEPTHS, num_heads: Sequence[int] = SWIN_UNETR_HEADS,
                 window_size: int = SWIN_UNETR_WINDOW, stem_patch: int = SWIN_UNETR_STEM_PATCH,
                 drop_path_rate: float = 0.0, use_checkpoint: bool = False, registry_name: str | None = None
                 ) -> None:
        if feature_size % FEATURE_SIZE_MULTIPLE:
            raise NnsslError(f"Swin feature_size {feature_size} must be a multiple of {FEATURE_SIZE_MULTIPLE} "
                             "(SwinUNETR's requirement)")
        dims = len(patch_size)
        stride = stem_patch * STAGE_DOWNSAMPLE ** len(depths)
        patch = check_patch_size(patch_size, (stride,) * dims, registry_name or type(self).__name__)
        super().__init__(
            in_chans=in_channels, embed_dim=feature_size, window_size=(window_size,) * dims,
            patch_size=(stem_patch,) * dims, depths=tuple(depths), num_heads=tuple(num_heads),
            mlp_ratio=SWIN_UNETR_MLP_RATIO, qkv_bias=True, drop_path_rate=drop_path_rate,
            use_checkpoint=use_checkpoint, spatial_dims=dims,
        )
        self.registry_name = registry_name
        self._record_config(dict(
            in_channels=in_channels, patch_size=patch_size, feature_size=feature_size, depths=depths,
            num_heads=num_heads, window_size=window_size, stem_patch=stem_patch, drop_path_rate=drop_path_rate,
            use_checkpoint=use_checkpoint))
        self.token_size = (stride,) * dims  # type: ignore[assignment]
        self.patch_size = patch
        self.in_channels = in_channels
        self.feature_size = self.stem_dim = feature_size
        self.stem_patch = stem_patch
        self.embed_dim = feature_size * STAGE_DOWNSAMPLE ** len(depths)  # replaces MONAI's (unused) attribute
        self.grid_size = tuple(p // stride for p in self.patch_size)  # type: ignore[assignment]
        self.transfer = TransferContract(encoder_prefix="swinViT.", stem_keys=("patch_embed.proj.weight",),
                                         pos_embed_key=None)

    def _hidden_states(self, x: torch.Tensor, mask: torch.Tensor | None,
                       mask_token: torch.Tensor | None) -> list[torch.Tensor]:
        """MONAI ``SwinTransformer.forward`` with an optional mask token inserted after the stem.

        Returns:
            Five maps (B, F * 2**i, D / (2 * 2**i), ...), i = 0..4, layer-normed as in SwinUNETR.
        """
        if mask is None:
            return super().forward(x, normalize=True)
        if mask_token is None:
            raise NnsslError(f"{self.registry_name or 'Swin'} cannot drop tokens (windowed attention on a dense "
                             "grid); use a ViT encoder for MAE-style masking")
        x0 = self.patch_embed(x)  # (B, F, D/2, H/2, W/2)
        hidden = mask.reshape(mask.shape[0], 1, *self.grid_size)  # (B, 1, gd, gh, gw)
        for axis in range(len(self.grid_size)):
            hidden = hidden.repeat_interleave(self.token_size[axis] // self.stem_patch, dim=axis + 2)
        x0 = torch.where(hidden, mask_token.to(x0.dtype)[None, :, None, None, None], x0)  # (B, F, D/2, H/2, W/2)
        x0 = self.pos_drop(x0)
        outs = [self.proj_out(x0, True)]
        for layers in (self.layers1, self.layers2, self.layers3, self.layers4):
            x0 = layers[0](x0.contiguous())  # (B, F * 2**i, ...)
            outs.append(self.proj_out(x0, True))
        return outs

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                         mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, D, H, W) -> (B, N, E), N = prod(patch_size / 32); see :meth:`Encoder.forward_features`."""
        last = self._hidden_states(x, mask, mask_token)[-1]  # (B, E, gd, gh, gw)
        return last.flatten(2).transpose(1, 2)  # (B, N, E)

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """SwinUNETR's ``hidden_states_out`` entries ``indices`` (0 = stem .. 4 = last stage)."""
        hidden = self._hidden_states(x, None, None)
        return [hidden[i] for i in indices]

    def forward(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:  # type: ignore[override]
        """(B, C, D, H, W) -> (B, N, E); ``normalize`` is accepted for MONAI signature compatibility only."""
        return self.forward_features(x)
