"""Count floating-point operations of a forward (and optionally backward) pass, for achieved GFLOP/s."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

# What a budgeted fine-tuning run spent (steps, seconds, FLOPs): nnssl_trainers writes it, nnssl_benchmark reads it.
COMPUTE_FILE = "compute.json"


def count_flops(fn: Callable[[], Any], backward: bool = False) -> int:
    """FLOPs PyTorch's ``FlopCounterMode`` counts while ``fn()`` runs (matmuls, convs, attention; 1 MAC = 2 FLOPs).

    Args:
        fn: Runs one forward pass and returns a tensor or an object with a ``loss`` tensor attribute.
        backward: Also run and count ``loss.backward()`` (gradients are left in ``.grad``).

    Returns:
        Total FLOPs of the call.
    """
    with FlopCounterMode(display=False) as counter:
        result = fn()
        if backward:
            loss = result.loss if hasattr(result, "loss") else result
            loss.sum().backward()
    return int(counter.get_total_flops())


def flops_per_sample(method: torch.nn.Module, x: torch.Tensor, backward: bool = False, seed: int = 0) -> float:
    """FLOPs of ``method.compute_loss(x)`` (forward, or forward + backward) divided by the batch size.

    Args:
        method: An SSL method (``compute_loss(x, generator)``).
        x: A batch (B, C, D, H, W) on the method's device.
        backward: Count the backward pass too.
        seed: Seed of the generator passed to ``compute_loss`` (masking draws do not change the count).
    """
    generator = torch.Generator(device=x.device).manual_seed(seed)
    if backward:
        total = count_flops(lambda: method.compute_loss(x, generator), backward=True)
        method.zero_grad(set_to_none=True)
    else:
        with torch.no_grad():
            total = count_flops(lambda: method.compute_loss(x, generator))
    return total / x.shape[0]
