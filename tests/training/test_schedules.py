"""Warm-up + cosine/poly learning-rate multipliers."""
from __future__ import annotations

import math

import pytest
import torch

from nnssl.config.pretrain import Schedule
from nnssl.training.schedules import build_scheduler, lr_factor


@pytest.mark.parametrize("schedule", list(Schedule))
def test_warmup_then_decay(schedule: Schedule) -> None:
    total, warmup = 100, 10
    factors = [lr_factor(s, total, warmup, schedule) for s in range(total + 1)]
    assert factors[0] == pytest.approx(1 / 11) and factors[warmup - 1] == pytest.approx(10 / 11)
    assert all(b > a for a, b in zip(factors[:warmup - 1], factors[1:warmup], strict=True))  # rising
    assert factors[warmup] == pytest.approx(1.0)
    decay = factors[warmup:]
    assert all(b <= a for a, b in zip(decay, decay[1:], strict=False))  # falling
    assert factors[total] == pytest.approx(0.0, abs=1e-12)


def test_cosine_midpoint_and_poly_shape() -> None:
    assert lr_factor(60, 110, 10, Schedule.COSINE) == pytest.approx(0.5)
    assert lr_factor(60, 110, 10, Schedule.POLY, poly_exponent=0.9) == pytest.approx(0.5 ** 0.9)
    assert lr_factor(0, 10, 0, Schedule.COSINE) == pytest.approx(1.0)


def test_scheduler_state_round_trips() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.AdamW(params, lr=1.0)
    sched = build_scheduler(opt, total_steps=20, warmup_steps=4, schedule=Schedule.COSINE)
    for _ in range(7):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    opt2.load_state_dict(opt.state_dict())
    sched2 = build_scheduler(opt2, total_steps=20, warmup_steps=4, schedule=Schedule.COSINE)
    sched2.load_state_dict(state)
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 16)))
