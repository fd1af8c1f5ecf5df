"""The nnU-Net fine-tuning network for a pretrained encoder: class, constructor kwargs and patch-size grid.

``nnssl_transfer_plans`` writes this into ``nnsslPlans.json`` and the trainers in ``nnssl_trainers`` write it into the
plans they save when started on ``nnUNetPlans``; both call :func:`finetune_architecture`, so the two agree.

- ViT encoders -> :class:`~nnssl.models.primus_skip.PrimusSkip` (default): DNA ``Primus`` (Isensee et al. 2025,
  https://arxiv.org/abs/2503.01835) whose token-only decoder is replaced by a convolutional skip decoder; or DNA
  ``Primus`` itself (``vit_decoder="patch"``). The encoder's ``down_projection.*`` / ``eva.*`` keys load 1:1 into both.
- Swin encoders -> MONAI ``SwinUNETR`` (Hatamizadeh et al. 2022, https://arxiv.org/abs/2201.01266): the encoder loads
  under ``swinViT.``, the convolutional UNETR decoder is new.

``arch_kwargs`` are plain JSON types and exclude input/output channels and the patch size (``input_shape`` of Primus),
which the trainer takes from the plans' ``patch_size`` so that there is only one source of truth.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nnssl.config.enums import StrEnum, look_up_option
from nnssl.models.decoders.skip_decoder import SKIP_CHANNELS
from nnssl.models.encoders import swin as swin_encoders
from nnssl.models.encoders import vit as vit_encoders
from nnssl.models.registry import encoder_entry

PRIMUS_CLASS = "dynamic_network_architectures.architectures.primus.Primus"
PRIMUS_SKIP_CLASS = "nnssl.models.primus_skip.PrimusSkip"
SWIN_UNETR_CLASS = "monai.networks.nets.swin_unetr.SwinUNETR"
# Stochastic depth while fine-tuning, as nnU-Net's Primus trainers use it.
FINETUNE_DROP_PATH_RATE = 0.2


class ViTDecoder(StrEnum):
    """Decoder of the ViT fine-tuning network: ``skip`` (:class:`~nnssl.models.primus_skip.PrimusSkip`, convolutional
    skip path from the image) or ``patch`` (DNA ``Primus``' ``PatchDecode``, tokens only)."""

    SKIP = "skip"
    PATCH = "patch"


DEFAULT_VIT_DECODER = ViTDecoder.SKIP


@dataclass(frozen=True)
class FinetuneArchitecture:
    """What nnU-Net's plans need to rebuild the fine-tuning network.

    Attributes:
        family: ``"vit"`` or ``"swin"`` (which trainer builds it).
        network_class_name: importable class path (DNA ``Primus`` or MONAI ``SwinUNETR``).
        arch_kwargs: constructor kwargs without channels and patch size.
        patch_multiple: every patch-size axis must be a multiple of this (Z, Y, X).
        num_layers: encoder depth used for layer-wise LR decay (ViT blocks; Swin stages).
    """

    family: str
    network_class_name: str
    arch_kwargs: dict[str, Any]
    patch_multiple: tuple[int, int, int]
    num_layers: int

    def plans_entry(self) -> dict[str, Any]:
        """The ``architecture`` entry of an nnU-Net plans configuration."""
        return {"network_class_name": self.network_class_name, "arch_kwargs": dict(self.arch_kwargs),
                "_kw_requires_import": []}


_BUILDERS: dict[str, Callable[[dict[str, Any], float, ViTDecoder], FinetuneArchitecture]] = {}


def _register(encoder_class: type) -> Callable:
    def decorator(fn: Callable[[dict[str, Any], float, ViTDecoder], FinetuneArchitecture]) -> Callable:
        _BUILDERS[f"{encoder_class.__module__}.{encoder_class.__qualname__}"] = fn
        return fn

    return decorator


def _kwargs_with_defaults(encoder_config: dict[str, Any]) -> dict[str, Any]:
    """The encoder config's kwargs on top of its registry variant's defaults."""
    entry = encoder_entry(str(encoder_config["name"]))
    return {**entry.defaults, **dict(encoder_config.get("kwargs", {}))}


@_register(vit_encoders.ViTEncoder)
def _primus(encoder_config: dict[str, Any], drop_path_rate: float, decoder: ViTDecoder) -> FinetuneArchitecture:
    kw = _kwargs_with_defaults(encoder_config)
    token_size = [int(t) for t in kw.get("token_size", vit_encoders.TOKEN_SIZE)]
    arch = {
        "embed_dim": int(kw["embed_dim"]),
        "patch_embed_size": token_size,
        "eva_depth": int(kw["depth"]),
        "eva_numheads": int(kw["num_heads"]),
        "num_register_tokens": int(kw.get("num_register_tokens", 0)),
        "use_rot_pos_emb": bool(kw.get("use_rot_pos_emb", True)),
        "use_abs_pos_embed": bool(kw.get("use_abs_pos_embed", True)),
        "mlp_ratio": float(kw.get("mlp_ratio", vit_encoders.PRIMUS_MLP_RATIO)),
        "drop_path_rate": float(drop_path_rate),
        "init_values": kw.get("init_values"),
        "scale_attn_inner": bool(kw.get("scale_attn_inner", False)),
    }
    network = PRIMUS_CLASS
    if decoder == ViTDecoder.SKIP:
        network = PRIMUS_SKIP_CLASS
        arch["skip_channels"] = [int(c) for c in SKIP_CHANNELS]
    return FinetuneArchitecture("vit", network, arch, tuple(token_size), arch["eva_depth"])  # type: ignore


@_register(swin_encoders.SwinEncoder)
def _swin_unetr(encoder_config: dict[str, Any], drop_path_rate: float, decoder: ViTDecoder) -> FinetuneArchitecture:
    kw = _kwargs_with_defaults(encoder_config)
    depths = [int(d) for d in kw.get("depths", swin_encoders.SWIN_UNETR_DEPTHS)]
    stem_patch = int(kw.get("stem_patch", swin_encoders.SWIN_UNETR_STEM_PATCH))
    arch = {
        "patch_size": stem_patch,
        "depths": depths,
        "num_heads": [int(h) for h in kw.get("num_heads", swin_encoders.SWIN_UNETR_HEADS)],
        "window_size": int(kw.get("window_size", swin_encoders.SWIN_UNETR_WINDOW)),
        "feature_size": int(kw["feature_size"]),
        "dropout_path_rate": float(drop_path_rate),
        "use_checkpoint": bool(kw.get("use_checkpoint", False)),
    }
    stride = stem_patch * swin_encoders.STAGE_DOWNSAMPLE ** len(depths)
    return FinetuneArchitecture("swin", SWIN_UNETR_CLASS, arch, (stride,) * 3, len(depths))  # type: ignore


def finetune_architecture(encoder_config: dict[str, Any], drop_path_rate: float = FINETUNE_DROP_PATH_RATE,
                          vit_decoder: ViTDecoder | str = DEFAULT_VIT_DECODER) -> FinetuneArchitecture:
    """The fine-tuning network for an encoder config ``{"name", "class", "kwargs"}`` (from a checkpoint header).

    ``vit_decoder`` picks the ViT network's decoder (see :class:`ViTDecoder`); Swin always gets Swin-UNETR's.

    Raises:
        NnsslError: the encoder class has no fine-tuning network (names the known ones).
    """
    key = look_up_option(str(encoder_config.get("class")), sorted(_BUILDERS), "encoder class for fine-tuning")
    decoder = ViTDecoder(look_up_option(str(vit_decoder), list(ViTDecoder), "ViT decoder"))
    return _BUILDERS[key](encoder_config, drop_path_rate, decoder)


def cap_patch_to_median(patch_size: Sequence[int], median_shape: Sequence[float],
                        multiple: Sequence[int]) -> list[int]:
    """``patch_size`` capped per axis at the median image shape rounded up to ``multiple``, so crops hold image,
    not padding (``nnssl_transfer_plans`` asks for nnU-Net's patch; Sarcoma CT: 56x192x192 -> 56x184x192)."""
    return [min(int(p), math.ceil(m / k) * k) for p, m, k in zip(patch_size, median_shape, multiple, strict=True)]


def round_patch_size(patch_size: Sequence[int], multiple: Sequence[int]) -> tuple[int, int, int]:
    """Nearest multiple of ``multiple`` per axis (ties round down, never below one multiple)."""
    out = []
    for size, m in zip(patch_size, multiple, strict=True):
        lower = max(m, (int(size) // m) * m)
        upper = lower + m
        out.append(lower if int(size) - lower <= upper - int(size) else upper)
    return tuple(out)  # type: ignore[return-value]
