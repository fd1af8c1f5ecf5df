"""Staged warm-up schedule, per-group LR scales and layer-wise decay groups (nnssl_trainers/lr.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nnssl_trainers.lr import (
    FineTuneSchedule,
    StagedLRScheduler,
    is_no_weight_decay,
    layer_decay_param_groups,
)
from nnssl_trainers.vit import SSLViTTrainer

BASE_LR = 1e-3


def test_stages_decoder_first_then_linear_warmup_then_poly() -> None:
    schedule = FineTuneSchedule(num_epochs=10, decoder_warmup_epochs=2, warmup_epochs=4)
    encoder = [schedule.factor(e, is_encoder=True) for e in range(10)]
    decoder = [schedule.factor(e, is_encoder=False) for e in range(10)]
    assert encoder[:2] == [0.0, 0.0]  # stage 1: encoder frozen in effect
    assert decoder[:2] == [0.5, 1.0]  # decoder warms up alone
    assert encoder[2:6] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # stage 2: the encoder warms up linearly
    assert decoder[2:7] == [1.0] * 5  # the decoder, warmed up in stage 1, stays at its peak (never restarts)
    assert encoder[6] == pytest.approx(1.0) and encoder[6] > encoder[7] > encoder[8] > encoder[9] > 0  # poly decay
    assert decoder[6:] == encoder[6:]


def test_decoder_warms_up_with_the_encoder_without_a_decoder_stage() -> None:
    schedule = FineTuneSchedule(num_epochs=10, decoder_warmup_epochs=0, warmup_epochs=4)
    decoder = [schedule.factor(e, is_encoder=False) for e in range(4)]
    assert decoder == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_decoder_lr_never_drops_at_the_stage_boundary_of_nnunets_schedule() -> None:
    schedule = FineTuneSchedule.for_budget(1000)  # 50 decoder epochs, then 100 warm-up epochs
    decoder = [schedule.factor(e, is_encoder=False) for e in range(1000)]
    assert all(later <= earlier for earlier, later in zip(decoder[49:], decoder[50:], strict=False))  # monotone


def test_for_budget_fits_short_schedules() -> None:
    for epochs in range(1, 30):
        schedule = FineTuneSchedule.for_budget(epochs)
        assert schedule.decoder_warmup_epochs + schedule.warmup_epochs <= epochs
        assert any(schedule.factor(e, True) > 0 for e in range(epochs)), f"encoder never trains in {epochs} epochs"
    with pytest.raises(ValueError, match="exceed"):
        FineTuneSchedule(num_epochs=3, decoder_warmup_epochs=2, warmup_epochs=2)


def test_scheduler_keeps_per_group_multipliers() -> None:
    a, b, c = (nn.Parameter(torch.zeros(2)) for _ in range(3))
    optimizer = torch.optim.AdamW([
        {"params": [a], "lr_scale": 0.25, "is_encoder": True},
        {"params": [b], "lr_scale": 1.0, "is_encoder": True},
        {"params": [c], "lr_scale": 1.0, "is_encoder": False},
    ], lr=BASE_LR)
    schedule = FineTuneSchedule(num_epochs=10, decoder_warmup_epochs=1, warmup_epochs=1)
    scheduler = StagedLRScheduler(optimizer, BASE_LR, schedule)
    assert scheduler.get_last_lr() == [0.0, 0.0, BASE_LR]
    scheduler.step(1)  # end of warm-up: full LR times each group's own scale
    assert scheduler.get_last_lr() == pytest.approx([0.25 * BASE_LR, BASE_LR, BASE_LR])
    scheduler.step(5)
    lrs = scheduler.get_last_lr()
    assert lrs[0] == pytest.approx(0.25 * lrs[1]) and 0 < lrs[1] < BASE_LR
    restored = StagedLRScheduler(optimizer, BASE_LR, schedule)
    restored.load_state_dict(scheduler.state_dict())
    assert restored.get_last_lr() == pytest.approx(lrs)


def test_vit_layer_decay_groups() -> None:
    num_layers = 2
    net = nn.Module()
    net.down_projection = nn.Conv3d(1, 4, 2)
    net.eva = nn.Module()
    net.eva.pos_embed = nn.Parameter(torch.zeros(1, 8, 4))
    net.eva.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(num_layers)])
    net.eva.norm = nn.LayerNorm(4)
    net.up_projection = nn.Conv3d(4, 2, 1)
    groups = layer_decay_param_groups(
        net.named_parameters(), 0.05, lambda n: SSLViTTrainer.layer_of(n, num_layers), num_layers, 0.5,
        lambda n: n.startswith(("down_projection.", "eva.")), is_no_weight_decay)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    encoder_of = {id(p): g["is_encoder"] for g in groups for p in g["params"]}
    assert scale_of[id(net.down_projection.weight)] == pytest.approx(0.5 ** 3)
    assert scale_of[id(net.eva.pos_embed)] == pytest.approx(0.5 ** 3)
    assert scale_of[id(net.eva.blocks[0].weight)] == pytest.approx(0.5 ** 2)
    assert scale_of[id(net.eva.blocks[1].weight)] == pytest.approx(0.5)
    assert scale_of[id(net.eva.norm.weight)] == scale_of[id(net.up_projection.weight)] == 1.0
    assert decay_of[id(net.eva.pos_embed)] == 0.0 and decay_of[id(net.eva.blocks[0].bias)] == 0.0
    assert decay_of[id(net.eva.blocks[0].weight)] == 0.05
    assert encoder_of[id(net.eva.blocks[0].weight)] and not encoder_of[id(net.up_projection.weight)]
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
