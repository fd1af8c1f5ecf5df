"""Transfer contract: where an encoder's weights live in the fine-tuning network (STYLE §10)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TransferContract:
    """How an encoder's state dict maps into the fine-tuning network.

    Fine-tuning code reads these fields and never spells out key strings itself.

    Attributes:
        encoder_prefix: Prefix under which the encoder's own keys live in the fine-tuning network
            (``""`` for DNA ``Primus``, ``"swinViT."`` for MONAI ``SwinUNETR``).
        stem_keys: Encoder keys whose shape depends on the number of input channels.
        pos_embed_key: Encoder key of the learned absolute position embedding (``None`` if there is none).
    """

    encoder_prefix: str
    stem_keys: tuple[str, ...]
    pos_embed_key: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict, as stored in the checkpoint header."""
        data = asdict(self)
        data["stem_keys"] = list(self.stem_keys)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransferContract:
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["encoder_prefix"]), tuple(data["stem_keys"]), data["pos_embed_key"])

    def to_finetune_keys(self, encoder_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename encoder keys to the fine-tuning network's keys by adding ``encoder_prefix``."""
        return {self.encoder_prefix + key: value for key, value in encoder_state_dict.items()}
