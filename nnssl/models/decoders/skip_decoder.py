"""U-shaped decoder for ViT tokens with a convolutional skip path from the image (UNETR-style, lightweight).

A ViT sees the volume in 8³ tokens; a tumour of 4-8 voxels across is smaller than one token, and a decoder that only
upsamples tokens (Primus' ``PatchDecode``) must learn every boundary inside a token from the token alone. This decoder
adds what UNETR (Hatamizadeh et al. 2022, https://arxiv.org/abs/2103.10504) adds: full-resolution detail. A few
strided convolutions encode the image at 1/1, 1/2, 1/4 ... of its resolution; the token volume is upsampled level by
level with transposed convolutions and merged with the image features of the same level.

The same module is the reconstruction head of ``simmim`` with ``head="skip"``, so pretraining trains it and
fine-tuning loads all of it except the last 1x1 convolution (``head``, whose channel count differs).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

SKIP_CHANNELS = (16, 32, 64)  # image features at 1/1, 1/2, 1/4 resolution (8³ tokens: three levels)
HEAD_KEY = "head"  # the last 1x1 convolution: its out_channels differ between pretraining and fine-tuning
_NORM_KWARGS = {"eps": 1e-5, "affine": True}
_ACT_KWARGS = {"inplace": True}
_HE_NEG_SLOPE = 1e-2


def level_strides(token_size: Sequence[int]) -> list[tuple[int, int, int]]:
    """Per-level stride (2 or 1 per axis) of the image path, finest level first; the product over levels times the
    last upsampling from the token grid equals ``token_size``: (8, 8, 8) -> [(1,1,1), (2,2,2), (2,2,2)] and a last
    upsampling of 2; (4, 8, 8) -> [(1,1,1), (1,2,2), (2,2,2)] and (1, 2, 2).

    Raises:
        ValueError: a token axis that is not a power of two.
    """
    if any(t < 1 or t & (t - 1) for t in token_size):
        raise ValueError(f"skip decoder needs power-of-two token sizes, got {tuple(token_size)}")
    levels = max(int(math.log2(t)) for t in token_size)
    strides = [(1, 1, 1)]
    for level in range(levels - 1):
        # level i (1-based) halves an axis while that axis still has factors of two left above the token grid
        strides.append(tuple(2 if t >> (levels - 1 - level) > 1 else 1 for t in token_size))  # type: ignore[misc]
    return strides


def _conv(in_ch: int, out_ch: int, stride: Sequence[int] = (1, 1, 1)) -> ConvDropoutNormReLU:
    return ConvDropoutNormReLU(nn.Conv3d, in_ch, out_ch, 3, tuple(stride), conv_bias=True,
                               norm_op=nn.InstanceNorm3d, norm_op_kwargs=_NORM_KWARGS,
                               nonlin=nn.LeakyReLU, nonlin_kwargs=_ACT_KWARGS)


class SkipDecoder(nn.Module):
    """Token volume + image -> voxel output.

    Args:
        in_channels: image channels C.
        embed_dim: token width E.
        token_size: voxels per token (powers of two).
        out_channels: output channels (classes when fine-tuning, C when reconstructing).
        skip_channels: image-path width per level, finest first; its length must equal the number of levels
            (log2 of the largest token axis), i.e. 3 for 8³ tokens.
    """

    def __init__(self, in_channels: int, embed_dim: int, token_size: Sequence[int], out_channels: int,
                 skip_channels: Sequence[int] = SKIP_CHANNELS) -> None:
        super().__init__()
        strides = level_strides(token_size)
        if len(skip_channels) != len(strides):
            raise ValueError(f"skip_channels {tuple(skip_channels)} needs {len(strides)} entries for token size "
                             f"{tuple(token_size)}")
        # stride from the coarsest image level to the token grid
        last = tuple(t // math.prod(s[a] for s in strides) for a, t in enumerate(token_size))
        self.image_path = nn.ModuleList()
        previous = in_channels
        for channels, stride in zip(skip_channels, strides, strict=True):
            self.image_path.append(_conv(previous, channels, stride))
            previous = channels
        ups_in = [*skip_channels[1:], embed_dim]  # what each level receives from the level below it
        up_strides = [*strides[1:], last]
        self.up = nn.ModuleList(nn.ConvTranspose3d(c_in, c, s, s) for c_in, c, s in
                                zip(ups_in, skip_channels, up_strides, strict=True))
        self.merge = nn.ModuleList(_conv(2 * c, c) for c in skip_channels)
        self.head = nn.Conv3d(skip_channels[0], out_channels, 1)
        self.apply(InitWeights_He(_HE_NEG_SLOPE))

    def forward(self, tokens: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """tokens (B, E, gd, gh, gw), image (B, C, D, H, W) -> (B, out_channels, D, H, W)."""
        skips = []
        x = image
        for block in self.image_path:
            x = block(x)  # (B, c_l, D_l, H_l, W_l)
            skips.append(x)
        x = tokens
        for level in reversed(range(len(skips))):
            x = self.up[level](x)  # (B, c_l, D_l, H_l, W_l)
            x = self.merge[level](torch.cat((x, skips[level]), dim=1))  # (B, c_l, D_l, H_l, W_l)
        return self.head(x)  # (B, out_channels, D, H, W)
