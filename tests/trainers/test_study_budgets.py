"""``nnssl_benchmark``'s budget table and the trainer classes that run it agree (nnssl never imports the trainers)."""
from __future__ import annotations

import pytest
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

import nnssl_trainers.ext.nnssl_trainers_ext as ext
from nnssl.cli.benchmark_budget import BUDGETS, Schedule
from nnssl_trainers.short import _Budgeted

NNUNET_DEFAULT = (1000, 250)  # nnUNetTrainer's epochs and iterations per epoch


def _cases() -> list[tuple[str, str, Schedule]]:
    return [pytest.param(b.name, trainer, s, id=f"{b.name}-{trainer}") for b in BUDGETS.values()
            for trainer, s in b.schedules.items()]


@pytest.mark.parametrize(("budget", "trainer", "schedule"), _cases())
def test_schedule_matches_the_trainer_class(budget: str, trainer: str, schedule: Schedule) -> None:
    cls = nnUNetTrainer if schedule.variant == "nnUNetTrainer" else getattr(ext, schedule.variant)  # as -tr finds it
    if issubclass(cls, _Budgeted):
        assert (cls.budget.epochs, cls.budget.iterations_per_epoch) == (schedule.epochs,
                                                                         schedule.iterations_per_epoch)
        assert cls.budget.val_iterations_per_epoch == BUDGETS[budget].val_iterations_per_epoch
    else:
        assert (schedule.epochs, schedule.iterations_per_epoch) == NNUNET_DEFAULT


def test_equal_compute_budgets_give_each_trainer_about_the_same_seconds() -> None:
    for budget in BUDGETS.values():
        if budget.equal != "compute":
            continue
        families = {"SSLViTTrainer": "vit", "SSLViTTrainer_scratch": "vit", "nnUNetTrainer": "cnn"}
        seconds = [s.steps * budget.cost.step_s[families[t]] for t, s in budget.schedules.items()]
        assert budget.compute_s is not None
        assert all(abs(s - budget.compute_s) <= 0.05 * budget.compute_s for s in seconds), seconds
