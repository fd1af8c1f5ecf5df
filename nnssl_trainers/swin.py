"""Swin fine-tuning: MONAI ``SwinUNETR`` whose ``swinViT`` comes from an nnssl-pretrained Swin encoder.

Swin UNETR: Hatamizadeh et al. 2022, https://arxiv.org/abs/2201.01266; its self-supervised pretraining: Tang et al.
2022, https://arxiv.org/abs/2111.14791. No layer-wise decay (hierarchical stages, as in the Swin-UNETR recipe).
"""
from __future__ import annotations

from typing import Any

from monai.networks.nets.swin_unetr import SwinUNETR
from torch import nn

from nnssl.models.finetune_arch import SWIN_UNETR_CLASS
from nnssl_trainers.base import SSLTrainerBase

DEFAULT_SWIN_ENCODER = "swin_b"
SWIN_ENCODER_ATTRIBUTE = "swinViT"  # SwinUNETR's encoder attribute; equals SwinEncoder.transfer.encoder_prefix


class SSLSwinTrainer(SSLTrainerBase):
    """Fine-tunes the linked nnssl Swin checkpoint (``nnssl_transfer_plans -d D -pd P``) in a Swin-UNETR network."""

    family = "swin"
    network_classes = {SWIN_UNETR_CLASS: SwinUNETR}
    default_encoder = DEFAULT_SWIN_ENCODER

    @staticmethod
    def build_network(network_class: type[nn.Module], arch_kwargs: dict[str, Any], patch_size: tuple[int, ...],
                      num_input_channels: int, num_output_channels: int) -> nn.Module:
        """``SwinUNETR(in_channels, out_channels, **arch_kwargs)`` (input size free, multiple of the grid)."""
        return network_class(in_channels=num_input_channels, out_channels=num_output_channels, **arch_kwargs)

    @classmethod
    def encoder_prefixes(cls, network: nn.Module) -> tuple[str, ...]:
        return (f"{SWIN_ENCODER_ATTRIBUTE}.",)


class SSLSwinTrainer_scratch(SSLSwinTrainer):
    """Same network and schedule as :class:`SSLSwinTrainer`, random initialization."""

    needs_pretrained = False
