"""Learning-rate schedules: linear warm-up, then cosine or poly decay, as a per-step multiplier for ``LambdaLR``."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from nnssl.config.pretrain import DEFAULT_POLY_EXPONENT, Schedule


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: Schedule,
              poly_exponent: float = DEFAULT_POLY_EXPONENT) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Warm-up rises linearly from ``1 / (warmup_steps + 1)`` to 1 over ``warmup_steps`` steps (never 0, so the first step
    already moves); afterwards cosine decays to 0 at ``total_steps`` (Loshchilov & Hutter, SGDR), poly as nnU-Net's
    ``(1 - t) ** exponent``.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if schedule == Schedule.COSINE:
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return (1.0 - progress) ** poly_exponent


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, schedule: Schedule,
                    poly_exponent: float = DEFAULT_POLY_EXPONENT) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping once per optimizer step. Its state_dict holds plain values only (the closure is not
    saved), so it round-trips through a ``weights_only`` checkpoint; rebuild with the same arguments, then load."""
    factor: Callable[[int], float] = lambda step: lr_factor(step, total_steps, warmup_steps, schedule,  # noqa: E731
                                                            poly_exponent)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
