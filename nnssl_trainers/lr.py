"""Fine-tuning learning rates: layer-wise LR decay groups and a staged warm-up schedule that keeps per-group scales.

nnU-Net's ``PolyLRScheduler`` and the Primus warm-up schedulers write one LR into every param group, which would erase
layer-wise decay. :class:`StagedLRScheduler` multiplies each group's own ``lr_scale`` instead.

Stages (per epoch, as nnU-Net steps its scheduler once per epoch with the epoch index):

1. decoder warm-up: encoder LR 0 (frozen in effect), decoder LR rises linearly to its peak;
2. encoder warm-up: encoder groups rise linearly from 0 to ``base_lr * lr_scale``; the decoder, warmed up in stage 1,
   stays at its peak (it warms up here only when stage 1 is empty);
3. poly decay ``(1 - t) ** exponent`` to 0 over the remaining epochs.

Layer-wise decay follows BEiT (Bao et al. 2021, https://arxiv.org/abs/2106.08254): a parameter at depth ``i`` of an
encoder with ``L`` blocks gets ``decay ** (L + 1 - i)``; the stem is depth 0, everything above the last block
(final norm, decoder) depth ``L + 1``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

POLY_EXPONENT = 0.9  # nnU-Net's PolyLRScheduler exponent
DECODER_WARMUP_FRACTION = 0.05  # share of the epochs spent training the decoder alone
WARMUP_FRACTION = 0.1  # share of the epochs spent warming up the whole network


@dataclass(frozen=True)
class FineTuneSchedule:
    """Epoch boundaries of the three stages.

    Args:
        num_epochs: total epochs.
        decoder_warmup_epochs: epochs of stage 1 (encoder LR 0).
        warmup_epochs: epochs of stage 2 (linear warm-up of everything).
        poly_exponent: exponent of the final poly decay.
    """

    num_epochs: int
    decoder_warmup_epochs: int
    warmup_epochs: int
    poly_exponent: float = POLY_EXPONENT

    def __post_init__(self) -> None:
        if self.decoder_warmup_epochs + self.warmup_epochs > self.num_epochs:
            raise ValueError(f"warm-up stages ({self.decoder_warmup_epochs} + {self.warmup_epochs} epochs) exceed "
                             f"num_epochs={self.num_epochs}")

    @classmethod
    def for_budget(cls, num_epochs: int, decoder_fraction: float = DECODER_WARMUP_FRACTION,
                   warmup_fraction: float = WARMUP_FRACTION) -> FineTuneSchedule:
        """Stage lengths as fractions of ``num_epochs``; each warm-up stage gets at least one epoch when it fits."""
        decoder = max(1, round(num_epochs * decoder_fraction)) if num_epochs >= 3 else 0
        warmup = max(1, round(num_epochs * warmup_fraction)) if num_epochs >= 2 else 0
        return cls(num_epochs, decoder, warmup)

    def factor(self, epoch: int, is_encoder: bool) -> float:
        """LR multiplier (before the group's ``lr_scale``) at ``epoch`` (0-based)."""
        if epoch < self.decoder_warmup_epochs:
            return 0.0 if is_encoder else (epoch + 1) / self.decoder_warmup_epochs
        epoch -= self.decoder_warmup_epochs
        if epoch < self.warmup_epochs:
            if not is_encoder and self.decoder_warmup_epochs > 0:
                return 1.0  # warmed up in stage 1: restarting it from 0 would undo that stage
            return (epoch + 1) / self.warmup_epochs
        epoch -= self.warmup_epochs
        remaining = max(1, self.num_epochs - self.decoder_warmup_epochs - self.warmup_epochs)
        return max(0.0, 1.0 - epoch / remaining) ** self.poly_exponent


class StagedLRScheduler:
    """Sets ``group["lr"] = base_lr * group["lr_scale"] * schedule.factor(epoch, group["is_encoder"])``.

    Stateless (a function of the epoch), so nnU-Net's ``--c`` reproduces it from ``current_epoch`` alone.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, schedule: FineTuneSchedule) -> None:
        self.optimizer = optimizer
        self.base_lr = base_lr
        self.schedule = schedule
        self.last_epoch = -1
        self.step(0)

    def step(self, epoch: int | None = None) -> None:
        """Apply the LRs of ``epoch`` (nnU-Net passes ``current_epoch``; None means the next epoch)."""
        self.last_epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        for group in self.optimizer.param_groups:
            factor = self.schedule.factor(self.last_epoch, group.get("is_encoder", False))
            group["lr"] = self.base_lr * group.get("lr_scale", 1.0) * factor

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step(state["last_epoch"])


def layer_decay_param_groups(named_parameters: Iterable[tuple[str, nn.Parameter]], weight_decay: float,
                             layer_of: Callable[[str], int], num_layers: int, layer_decay: float,
                             is_encoder: Callable[[str], bool],
                             no_weight_decay: Callable[[str, nn.Parameter], bool]) -> list[dict[str, Any]]:
    """Param groups for AdamW, one per (depth, decays-or-not, encoder-or-not).

    Args:
        named_parameters: the network's ``named_parameters()``; frozen ones are skipped.
        weight_decay: decoupled weight decay of the decaying groups.
        layer_of: depth of a parameter name, 0 (stem) .. ``num_layers + 1`` (head).
        num_layers: number of encoder blocks ``L``.
        layer_decay: per-depth LR factor (1.0 = no layer-wise decay).
        is_encoder: whether a name belongs to the pretrained encoder (frozen during the decoder warm-up).
        no_weight_decay: biases, norms, position embeddings and similar.

    Returns:
        Groups with keys ``params``, ``weight_decay``, ``lr_scale``, ``is_encoder``, ``name``.
    """
    groups: dict[tuple[int, bool, bool], dict[str, Any]] = {}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        depth = min(max(layer_of(name), 0), num_layers + 1)
        decays = not no_weight_decay(name, param)
        encoder = is_encoder(name)
        key = (depth, decays, encoder)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": weight_decay if decays else 0.0,
                           "lr_scale": layer_decay ** (num_layers + 1 - depth), "is_encoder": encoder,
                           "name": f"{'encoder' if encoder else 'decoder'}_depth{depth}_{'wd' if decays else 'nowd'}"}
        groups[key]["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def is_no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, norm scales (1-D tensors) and position embeddings/tokens are not decayed (as in timm and MAE)."""
    return param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name or "token" in name

