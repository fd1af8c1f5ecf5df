"""The encoder interface every backbone implements (STYLE §8), and the patch-size check."""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from nnssl.errors import NnsslError
from nnssl.models.transfer import TransferContract

# How many nearest valid sizes per axis are offered in the error message (one below, one above).
_NEAREST_CANDIDATES = 2


def nearest_valid_sizes(patch_size: Sequence[int], multiple: Sequence[int]) -> list[tuple[int, ...]]:
    """Patch sizes divisible by ``multiple`` closest to ``patch_size`` (rounded down/up per axis), nearest first."""
    per_axis = []
    for size, m in zip(patch_size, multiple, strict=True):
        below = max(m, (size // m) * m)
        above = max(m, -(-size // m) * m)
        per_axis.append(sorted({below, above}))
    candidates = {tuple(c) for c in itertools.product(*per_axis)}
    return sorted(candidates, key=lambda c: (sum(abs(a - b) for a, b in zip(c, patch_size, strict=True)), c))


def check_patch_size(patch_size: Sequence[int], multiple: Sequence[int], encoder: str) -> tuple[int, int, int]:
    """Return ``patch_size`` as a 3-tuple if every axis is a positive multiple of ``multiple``.

    Raises:
        NnsslError: Naming the nearest valid sizes.
    """
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != len(multiple):
        raise NnsslError(f"patch size {patch} must have 3 entries (D, H, W) for encoder {encoder!r}")
    if all(p > 0 and p % m == 0 for p, m in zip(patch, multiple, strict=True)):
        return patch  # type: ignore[return-value]
    options = " or ".join(str(c) for c in nearest_valid_sizes(patch, multiple)[:_NEAREST_CANDIDATES])
    raise NnsslError(
        f"patch size {patch} is not divisible by encoder {encoder!r}'s grid {tuple(multiple)} on every axis; "
        f"nearest valid sizes: {options} (pass one with --patch-size or re-plan)"
    )


class Encoder(nn.Module):
    """Backbone interface: tokens out, nothing about SSL inside.

    Attributes:
        grid_size: Tokens per axis (gd, gh, gw) of :meth:`forward_features`' output.
        token_size: Voxels per output token along (D, H, W).
        embed_dim: E, channels of each output token.
        stem_dim: Channels of the stem's tokens, where a SimMIM mask token is inserted.
        transfer: Where the weights go in the fine-tuning network.
        supports_token_drop: Whether ``forward_features(x, mask)`` can skip hidden tokens (MAE).
        registry_name: Name it was built under (set by ``build_encoder``).
    """

    supports_token_drop: ClassVar[bool] = False
    registry_name: str | None = None
    grid_size: tuple[int, int, int]
    token_size: tuple[int, int, int]
    embed_dim: int
    stem_dim: int
    transfer: TransferContract

    def _record_config(self, init_kwargs: dict[str, Any]) -> None:
        """Remember the constructor kwargs for :meth:`config` (call after ``nn.Module.__init__``)."""
        self._init_kwargs = _plain(init_kwargs)

    @property
    def num_tokens(self) -> int:
        """N = gd * gh * gw."""
        gd, gh, gw = self.grid_size
        return gd * gh * gw

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                         mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """Encode a volume to tokens.

        Args:
            x: (B, C, D, H, W) at the encoder's patch size.
            mask: (B, N) bool over output tokens, True = hidden. Without ``mask_token`` hidden tokens are dropped
                (only if ``supports_token_drop``); with it they are replaced by ``mask_token`` after the stem.
            mask_token: (stem_dim,) learned token of a masked-image-modelling method, or None.

        Returns:
            (B, N_visible, E) if tokens are dropped, else (B, N, E).
        """
        raise NotImplementedError

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Intermediate feature maps, each (B, E_i, gd_i, gh_i, gw_i); negative indices count from the end."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward_features` without a mask: (B, C, D, H, W) -> (B, N, E)."""
        return self.forward_features(x)

    def tokens_to_volume(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, E) -> (B, E, gd, gh, gw)."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid_size)

    def config(self) -> dict[str, Any]:
        """``{"name", "class", "kwargs"}`` in plain types; ``build_encoder_from_config`` rebuilds the same module."""
        cls = type(self)
        return {"name": self.registry_name, "class": f"{cls.__module__}.{cls.__qualname__}",
                "kwargs": dict(self._init_kwargs)}


def _plain(value: Any) -> Any:
    """Tuples -> lists recursively, so configs survive JSON and ``weights_only`` pickles unchanged."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
