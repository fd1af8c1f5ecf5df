"""``compute.json``: FLOPs of a training step counted on the meta device, and what a run records."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from nnssl.models.flops import count_flops
from nnssl_trainers.compute import COMPUTE_FILE, ComputeRecord, training_step_flops


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4), nn.LeakyReLU(), nn.Conv3d(4, 2, 1))


def test_meta_count_equals_a_real_step_and_leaves_the_network_alone() -> None:
    network = _net()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    counted = training_step_flops(network, (2, 1, 8, 8, 8))
    assert all(torch.equal(v, before[k]) for k, v in network.state_dict().items())
    assert all(p.grad is None and p.device.type == "cpu" for p in network.parameters())
    real = count_flops(lambda: network(torch.zeros(2, 1, 8, 8, 8)), backward=True)
    assert counted == real > 0


def test_deep_supervision_heads_are_all_counted() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv3d(1, 2, 1), nn.Conv3d(1, 2, 1)

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [self.a(x), self.b(x)]

    one = training_step_flops(nn.Conv3d(1, 2, 1), (1, 1, 4, 4, 4))
    assert training_step_flops(TwoHeads(), (1, 1, 4, 4, 4)) == 2 * one


def test_record_writes_steps_seconds_and_flops(tmp_path: Path) -> None:
    record = ComputeRecord(steps=10, batch_shape=(2, 1, 8, 8, 8), flops_per_step=3_000_000_000, resumed=False)
    data = json.loads(record.write(tmp_path).read_text())
    assert (tmp_path / COMPUTE_FILE).is_file()
    assert data["steps"] == 10 and data["train_s"] >= 0 and data["total_tflops"] == 0.03
    assert data["s_per_step"] == round(data["train_s"] / 10, 4) and data["batch_shape"] == [2, 1, 8, 8, 8]
