"""ViT fine-tuning: a Primus ViT whose ``down_projection`` + ``eva`` come from an nnssl-pretrained ViT encoder.

``SSLViTTrainer`` builds :class:`~nnssl.models.primus_skip.PrimusSkip` (Primus with a convolutional skip decoder);
``SSLViTTrainer_patchdecode`` builds DNA's ``Primus`` unchanged (token-only ``PatchDecode``). Both load the same
encoder keys; ``docs/benchmark.md`` has the numbers behind the default.

Primus: Isensee et al. 2025, https://arxiv.org/abs/2503.01835. Layer-wise LR decay (BEiT, Bao et al. 2021,
https://arxiv.org/abs/2106.08254) and stochastic depth (``drop_path_rate`` in the plans' ``arch_kwargs``).
"""
from __future__ import annotations

import re
from typing import Any

from dynamic_network_architectures.architectures.primus import Primus
from torch import nn

from nnssl.models.finetune_arch import PRIMUS_CLASS, PRIMUS_SKIP_CLASS, ViTDecoder
from nnssl.models.primus_skip import PrimusSkip
from nnssl_trainers.base import SSLTrainerBase

VIT_LAYER_DECAY = 0.75  # BEiT / MAE fine-tuning value for 12-block ViTs
DEFAULT_VIT_ENCODER = "primus_s"
_BLOCK_INDEX = re.compile(r"\.blocks\.(\d+)\.")


class SSLViTTrainer(SSLTrainerBase):
    """Fine-tunes the linked nnssl ViT checkpoint (``nnssl_transfer_plans -d D -pd P``) in a Primus network."""

    family = "vit"
    network_classes = {PRIMUS_SKIP_CLASS: PrimusSkip, PRIMUS_CLASS: Primus}
    default_encoder = DEFAULT_VIT_ENCODER
    layer_decay = VIT_LAYER_DECAY

    @staticmethod
    def build_network(network_class: type[nn.Module], arch_kwargs: dict[str, Any], patch_size: tuple[int, ...],
                      num_input_channels: int, num_output_channels: int) -> nn.Module:
        """``network_class(input_channels, num_classes, input_shape=patch_size, **arch_kwargs)``."""
        return network_class(input_channels=num_input_channels, num_classes=num_output_channels,
                             input_shape=patch_size, **arch_kwargs)

    @classmethod
    def encoder_prefixes(cls, network: nn.Module) -> tuple[str, ...]:
        """DNA declares its encoder and stem submodules (``key_to_encoder`` / ``key_to_stem``)."""
        return (f"{network.key_to_encoder}.", f"{network.key_to_stem}.", "register_tokens")

    @classmethod
    def layer_of(cls, name: str, num_layers: int) -> int:
        """Stem, position embedding and register tokens 0; block i -> i + 1; final norm and decoder L + 1."""
        match = _BLOCK_INDEX.search(f".{name}")
        if match:
            return int(match.group(1)) + 1
        if name.startswith(("down_projection.", "register_tokens")) or name.endswith("pos_embed"):
            return 0
        return num_layers + 1


class SSLViTTrainer_scratch(SSLViTTrainer):
    """Same network and schedule as :class:`SSLViTTrainer`, random initialization (the honest baseline)."""

    needs_pretrained = False


class SSLViTTrainer_patchdecode(SSLViTTrainer):
    """:class:`SSLViTTrainer` with DNA ``Primus``' token-only decoder (the network before the skip decoder)."""

    vit_decoder = ViTDecoder.PATCH


class SSLViTTrainer_patchdecode_scratch(SSLViTTrainer_patchdecode):
    """:class:`SSLViTTrainer_patchdecode` from random initialization."""

    needs_pretrained = False
