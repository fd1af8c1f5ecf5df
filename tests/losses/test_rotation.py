"""Rotation cross entropy on the number of quarter turns."""
from __future__ import annotations

import math

import torch

from nnssl.losses.rotation import rotation_loss

CLASSES = 4


def test_uniform_logits_give_log_classes() -> None:
    turns = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(rotation_loss(torch.zeros(4, CLASSES), turns), torch.tensor(math.log(CLASSES)))


def test_confident_correct_logits_give_almost_zero() -> None:
    turns = torch.tensor([3, 0, 2])
    logits = 50.0 * torch.nn.functional.one_hot(turns, CLASSES).float()
    assert rotation_loss(logits, turns) < 1e-6
    assert rotation_loss(logits, (turns + 1) % CLASSES) > 10
