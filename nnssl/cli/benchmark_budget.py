"""Budgets and trainers of the label-efficiency study (``nnssl_benchmark --budget tiny|short|full``).

A budget fixes, for every compared trainer, the nnU-Net trainer class that runs it (the classes carry the epochs and
iterations, so all trainers of one budget train for the same number of steps), the pretraining settings, and a cost
model for ``--dry-run``. The trainer classes live in ``nnssl_trainers`` and are found by nnU-Net through
``nnUNet_extTrainer``; ``nnssl`` only names them (it never imports ``nnssl_trainers``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from nnssl.config.enums import StrEnum, look_up_option
from nnssl.config.plans import DEFAULT_PLANS_NAME

NNUNET_PLANS = "nnUNetPlans"


class Family(StrEnum):
    """Network family of a compared trainer; the cost model has one step time per family."""

    VIT = "vit"
    CNN = "cnn"


@dataclass(frozen=True)
class StudyTrainer:
    """A trainer compared in the study.

    Attributes:
        name: the name users pass to ``--trainers`` (the full-budget nnU-Net trainer class).
        plans: nnU-Net plans identifier it trains on (``-p``).
        pretrained: whether it starts from the nnssl pretraining.
        family: network family (cost model).
    """

    name: str
    plans: str
    pretrained: bool
    family: Family


TRAINERS: dict[str, StudyTrainer] = {t.name: t for t in (
    StudyTrainer("SSLViTTrainer", DEFAULT_PLANS_NAME, pretrained=True, family=Family.VIT),
    StudyTrainer("SSLViTTrainer_scratch", DEFAULT_PLANS_NAME, pretrained=False, family=Family.VIT),
    StudyTrainer("nnUNetTrainer", NNUNET_PLANS, pretrained=False, family=Family.CNN),
)}
DEFAULT_TRAINERS = tuple(TRAINERS)


@dataclass(frozen=True)
class PretrainSettings:
    """``nnssl_pretrain`` arguments of a budget (the patch size is the pretraining plans')."""

    method: str
    encoder: str
    epochs: int
    iters_per_epoch: int
    batch_size: int
    lr: float | None = None  # None: nnssl_pretrain's default

    @property
    def steps(self) -> int:
        return self.epochs * self.iters_per_epoch


@dataclass(frozen=True)
class CostModel:
    """Wall-clock seconds for ``--dry-run`` estimates; ``measured`` says where the numbers come from.

    Attributes:
        step_s: seconds per fine-tuning iteration (batch 2, data augmentation included) per family.
        run_overhead_s: process start, data loader start, checkpoints, per run.
        case_validation_s: nnU-Net's final validation (sliding window + mirroring) per held-out case, per family.
        pretrain_step_s: seconds per pretraining step.
        preprocessing_s: planning and preprocessing of both datasets, once.
        reference_patch: fine-tuning patch (Z, Y, X) the step and validation times were taken at; other patches
            scale them by their voxel count.
        device: the device the numbers are for.
        measured: provenance of the numbers.
    """

    step_s: dict[Family, float]
    run_overhead_s: float
    case_validation_s: dict[Family, float]
    pretrain_step_s: float
    preprocessing_s: float
    reference_patch: tuple[int, int, int]
    device: str
    measured: str

    def scale(self, patch: Sequence[int] | None) -> float:
        """Cost factor of fine-tuning at ``patch`` relative to :attr:`reference_patch` (1 when unknown)."""
        return 1.0 if patch is None else math.prod(patch) / math.prod(self.reference_patch)


@dataclass(frozen=True)
class StudyBudget:
    """One ``--budget``: trainer classes, their (equal) schedule, the pretraining and the cost model."""

    name: str
    description: str
    variants: dict[str, str]
    epochs: int
    iterations_per_epoch: int
    val_iterations_per_epoch: int
    pretraining: PretrainSettings
    cost: CostModel
    notes: tuple[str, ...] = field(default=())

    @property
    def steps(self) -> int:
        return self.epochs * self.iterations_per_epoch

    def variant(self, trainer: str) -> str:
        """The nnU-Net trainer class that runs ``trainer`` at this budget."""
        return self.variants[look_up_option(trainer, self.variants, "trainer")]

    def run_seconds(self, trainer: StudyTrainer, num_heldout: int, patch: Sequence[int] | None = None) -> float:
        """Estimated wall seconds of one fine-tuning run (training + final validation) at ``patch``."""
        cost = self.cost
        step = cost.step_s[trainer.family] * cost.scale(patch)
        validation_steps = self.epochs * self.val_iterations_per_epoch / 2  # forward only: about half a step
        return (cost.run_overhead_s + (self.steps + validation_steps) * step
                + num_heldout * cost.case_validation_s[trainer.family] * cost.scale(patch))


# Measured on this project's 2-core CPU machine (quiet, one OpenMP thread and one data-augmentation worker per run)
# with the study phantoms (32x48x48 voxels, 4 x 3 x 3 mm): nnU-Net's PlainConvUNet 0.6 s per iteration (batch 2,
# augmentation included); a vit_tiny Primus run of 200 iterations 23 s in all, process start and validation included;
# MAE pretraining of vit_tiny at 32^3 0.015 s per step (10,000 steps in 156 s).
_CPU_COST = CostModel(step_s={Family.VIT: 0.06, Family.CNN: 0.6}, run_overhead_s=12.0,
                      case_validation_s={Family.VIT: 0.3, Family.CNN: 1.0}, pretrain_step_s=0.015,
                      preprocessing_s=30.0, reference_patch=(32, 48, 48), device="cpu",
                      measured="measured on 2 quiet CPU cores, study phantoms 32x48x48")
# Not measured here (no GPU in this project): nnU-Net's documented order of magnitude for 3d_fullres on one modern
# GPU (about 0.5 s per iteration of 250 per epoch, 1000 epochs ~ 1.5 days) and Primus-S at a similar speed.
_GPU_COST = CostModel(step_s={Family.VIT: 0.5, Family.CNN: 0.5}, run_overhead_s=60.0,
                      case_validation_s={Family.VIT: 10.0, Family.CNN: 10.0}, pretrain_step_s=0.5,
                      preprocessing_s=1800.0, reference_patch=(128, 128, 128), device="cuda",
                      measured="assumed for one modern GPU (not measured in this project)")

BUDGETS: dict[str, StudyBudget] = {b.name: b for b in (
    StudyBudget(
        name="tiny", description="smoke test of the whole study (tests): 2 epochs x 2 iterations, nothing learns",
        variants={"SSLViTTrainer": "SSLViTTrainer_tiny", "SSLViTTrainer_scratch": "SSLViTTrainer_scratch_tiny",
                  "nnUNetTrainer": "nnsslUNetTrainer_tiny"},
        epochs=2, iterations_per_epoch=2, val_iterations_per_epoch=1,
        pretraining=PretrainSettings("mae", "vit_tiny", epochs=1, iters_per_epoch=2, batch_size=2, lr=1e-3),
        cost=_CPU_COST),
    StudyBudget(
        name="short", description="CPU study on small phantoms: 10 epochs x 20 iterations (batch 2) per run",
        variants={"SSLViTTrainer": "SSLViTTrainer_study", "SSLViTTrainer_scratch": "SSLViTTrainer_scratch_study",
                  "nnUNetTrainer": "nnsslUNetTrainer_study"},
        epochs=10, iterations_per_epoch=20, val_iterations_per_epoch=2,
        pretraining=PretrainSettings("mae", "vit_tiny", epochs=100, iters_per_epoch=100, batch_size=2, lr=1e-3),
        cost=_CPU_COST,
        notes=("200 steps are far from converged: the study shows the early, label-starved regime",)),
    StudyBudget(
        name="full", description="GPU study: nnU-Net's 1000 epochs x 250 iterations, Primus-S pretrained 100 x 250",
        variants={"SSLViTTrainer": "SSLViTTrainer", "SSLViTTrainer_scratch": "SSLViTTrainer_scratch",
                  "nnUNetTrainer": "nnUNetTrainer"},
        epochs=1000, iterations_per_epoch=250, val_iterations_per_epoch=50,
        pretraining=PretrainSettings("mae", "primus_s", epochs=100, iters_per_epoch=250, batch_size=2),
        cost=_GPU_COST),
)}
DEFAULT_BUDGET = "short"


def get_budget(name: str) -> StudyBudget:
    """The budget called ``name`` (did-you-mean error otherwise)."""
    return BUDGETS[look_up_option(name, BUDGETS, "budget")]


def get_trainer(name: str) -> StudyTrainer:
    """The compared trainer called ``name`` (did-you-mean error otherwise)."""
    return TRAINERS[look_up_option(name, TRAINERS, "trainer")]
