"""What a fine-tuning run spent: steps, measured training seconds and FLOPs, written to ``compute.json`` in its fold.

``nnssl_benchmark`` compares trainers at equal compute, so every budgeted run (``_study``/``_short``/``_tiny``
classes, nnU-Net's CNN included) records what it really used; the report lists it beside the Dice.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnssl.config.plans import write_json_atomic
from nnssl.models.flops import COMPUTE_FILE, count_flops


def training_step_flops(network: nn.Module, batch_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward + backward pass of ``network`` on a batch ``(B, C, D, H, W)``.

    Counted on a copy on the ``meta`` device: shapes only, no memory and no arithmetic, and the network's gradients
    and state stay untouched. Deep-supervision outputs (a list) are summed, so every head's backward is counted.
    """
    network = getattr(network, "module", network)  # DistributedDataParallel
    network = getattr(network, "_orig_mod", network)  # torch.compile keeps the original module here
    replica = copy.deepcopy(network).to("meta").train()
    batch = torch.zeros(batch_shape, device="meta")

    def step() -> torch.Tensor:
        output = replica(batch)
        outputs = output if isinstance(output, (list, tuple)) else [output]
        return torch.stack([o.float().sum() for o in outputs]).sum()

    return count_flops(step, backward=True)


class ComputeRecord:
    """Times the training loop (from ``on_train_start`` to ``on_train_end``, final validation excluded)."""

    def __init__(self, steps: int, batch_shape: tuple[int, ...], flops_per_step: int, resumed: bool) -> None:
        self.steps = steps
        self.batch_shape = batch_shape
        self.flops_per_step = flops_per_step
        self.resumed = resumed
        self.started = time.perf_counter()

    def as_dict(self) -> dict[str, Any]:
        train_s = time.perf_counter() - self.started
        return {"steps": self.steps, "train_s": round(train_s, 2), "s_per_step": round(train_s / self.steps, 4),
                "flops_per_step": self.flops_per_step, "total_tflops": round(self.steps * self.flops_per_step / 1e12,
                                                                             3),
                "batch_shape": list(self.batch_shape), "resumed": self.resumed,
                "threads": torch.get_num_threads()}

    def write(self, folder: Path) -> Path:
        """``folder/compute.json``, atomically."""
        path = Path(folder) / COMPUTE_FILE
        write_json_atomic(self.as_dict(), path)
        return path
