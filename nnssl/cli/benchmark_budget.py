"""Budgets and trainers of the label-efficiency study (``nnssl_benchmark --budget tiny|short|full``).

A budget fixes, for every compared trainer, the nnU-Net trainer class that runs it and that class's epochs and
iterations (:class:`Schedule`), the pretraining settings, and a cost model for ``--dry-run``. The ``short`` budget
gives every trainer the same **measured CPU-seconds of training**, not the same steps: a small ViT step costs a
fraction of a CNN step, so equal steps would stop the ViTs long before the CNN has spent its budget. Each run records
what it really spent (steps, seconds, FLOPs) in ``compute.json``, and the report lists it. The trainer classes live in
``nnssl_trainers`` and are found by nnU-Net through ``nnUNet_extTrainer``; ``nnssl`` only names them (it never imports
``nnssl_trainers``).
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
    method_kwargs: tuple[tuple[str, str], ...] = ()  # nnssl_pretrain --method-kwargs

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
class Schedule:
    """How one compared trainer runs at a budget: the nnU-Net trainer class and the epochs x iterations it carries
    (the class in ``nnssl_trainers`` must agree; a test checks it)."""

    variant: str
    epochs: int
    iterations_per_epoch: int

    @property
    def steps(self) -> int:
        return self.epochs * self.iterations_per_epoch


@dataclass(frozen=True)
class StudyBudget:
    """One ``--budget``: per-trainer schedules, what they hold equal, the pretraining and the cost model.

    Attributes:
        compute_s: training seconds per run every trainer is planned to get, on :attr:`cost`'s device; None when the
            schedules are equal steps instead.
    """

    name: str
    description: str
    schedules: dict[str, Schedule]
    val_iterations_per_epoch: int
    pretraining: PretrainSettings
    cost: CostModel
    compute_s: float | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def equal(self) -> str:
        """What the schedules hold equal: ``"compute"`` (sized to :attr:`compute_s`) or ``"steps"``."""
        return "steps" if self.compute_s is None else "compute"

    def schedule(self, trainer: str) -> Schedule:
        """The schedule of ``trainer`` at this budget (did-you-mean error otherwise)."""
        return self.schedules[look_up_option(trainer, self.schedules, "trainer")]

    def variant(self, trainer: str) -> str:
        """The nnU-Net trainer class that runs ``trainer`` at this budget."""
        return self.schedule(trainer).variant

    def run_seconds(self, trainer: StudyTrainer, num_heldout: int, patch: Sequence[int] | None = None) -> float:
        """Estimated wall seconds of one fine-tuning run (training + final validation) at ``patch``."""
        cost, schedule = self.cost, self.schedule(trainer.name)
        step = cost.step_s[trainer.family] * cost.scale(patch)
        validation_steps = schedule.epochs * self.val_iterations_per_epoch / 2  # forward only: about half a step
        return (cost.run_overhead_s + (schedule.steps + validation_steps) * step
                + num_heldout * cost.case_validation_s[trainer.family] * cost.scale(patch))


# Planned from tuning runs on this project's 2-core CPU machine, two runs at a time with one OpenMP thread and one
# data-augmentation worker each, on the study phantoms (32x48x48 voxels, 4 x 3 x 3 mm, batch 2): nnU-Net's
# PlainConvUNet 2.4 s per iteration, the vit_tiny PrimusSkip 0.34 s; SimMIM pretraining of vit_tiny at 32^3 0.2 s per
# step. The short budget's schedules (nnssl_trainers/study.py, the same numbers) aim both families at SHORT_COMPUTE_S
# of training; the committed study measured 0.58 s (ViT) and 2.91 s (CNN) per step, see its compute table.
_CPU_COST = CostModel(step_s={Family.VIT: 0.34, Family.CNN: 2.4}, run_overhead_s=15.0,
                      case_validation_s={Family.VIT: 2.0, Family.CNN: 4.0}, pretrain_step_s=0.2,
                      preprocessing_s=60.0, reference_patch=(32, 48, 48), device="cpu",
                      measured="planned from tuning runs on 2 CPU cores, two runs at a time, study phantoms 32x48x48")
SHORT_COMPUTE_S = 120.0
SHORT_CNN = (5, 10)  # epochs, iterations: 50 x 2.4 s
SHORT_VIT = (18, 20)  # 360 x 0.34 s
SHORT_PRETRAIN_EPOCHS = 10  # x 100 SimMIM steps, as chosen on the tuning phantoms
# Not measured here (no GPU in this project): nnU-Net's documented order of magnitude for 3d_fullres on one modern
# GPU (about 0.5 s per iteration of 250 per epoch, 1000 epochs ~ 1.5 days) and Primus-S at a similar speed.
_GPU_COST = CostModel(step_s={Family.VIT: 0.5, Family.CNN: 0.5}, run_overhead_s=60.0,
                      case_validation_s={Family.VIT: 10.0, Family.CNN: 10.0}, pretrain_step_s=0.5,
                      preprocessing_s=1800.0, reference_patch=(128, 128, 128), device="cuda",
                      measured="assumed for one modern GPU (not measured in this project)")

def _equal_steps(variants: dict[str, str], epochs: int, iterations: int) -> dict[str, Schedule]:
    return {trainer: Schedule(variant, epochs, iterations) for trainer, variant in variants.items()}


BUDGETS: dict[str, StudyBudget] = {b.name: b for b in (
    StudyBudget(
        name="tiny", description="smoke test of the whole study (tests): 2 epochs x 2 iterations, nothing learns",
        schedules=_equal_steps({"SSLViTTrainer": "SSLViTTrainer_tiny",
                                "SSLViTTrainer_scratch": "SSLViTTrainer_scratch_tiny",
                                "nnUNetTrainer": "nnsslUNetTrainer_tiny"}, 2, 2),
        val_iterations_per_epoch=1,
        pretraining=PretrainSettings("simmim", "vit_tiny", epochs=1, iters_per_epoch=2, batch_size=2, lr=1e-3,
                                     method_kwargs=(("head", "skip"),)),
        cost=_CPU_COST),
    StudyBudget(
        name="short",
        description=f"CPU study on small phantoms at equal compute: about {SHORT_COMPUTE_S:.0f} s of training per run "
                    "on one CPU thread, whatever the network",
        schedules={
            "SSLViTTrainer": Schedule("SSLViTTrainer_study", *SHORT_VIT),
            "SSLViTTrainer_scratch": Schedule("SSLViTTrainer_scratch_study", *SHORT_VIT),
            "nnUNetTrainer": Schedule("nnsslUNetTrainer_study", *SHORT_CNN),
        },
        val_iterations_per_epoch=2, compute_s=SHORT_COMPUTE_S,
        pretraining=PretrainSettings("simmim", "vit_tiny", epochs=SHORT_PRETRAIN_EPOCHS, iters_per_epoch=100,
                                     batch_size=2, lr=1e-3, method_kwargs=(("head", "skip"),)),
        cost=_CPU_COST,
        notes=(f"equal compute: each trainer's steps = {SHORT_COMPUTE_S:.0f} s / its planned seconds per step "
               "(each run's compute.json has what it really spent; see the compute table). nnU-Net's CNN gets few "
               "steps at this budget: it is the same CPU time, not nnU-Net's default schedule",)),
    StudyBudget(
        name="full", description="GPU study: nnU-Net's 1000 epochs x 250 iterations, Primus-S pretrained 100 x 250",
        schedules=_equal_steps({"SSLViTTrainer": "SSLViTTrainer", "SSLViTTrainer_scratch": "SSLViTTrainer_scratch",
                                "nnUNetTrainer": "nnUNetTrainer"}, 1000, 250),
        val_iterations_per_epoch=50,
        pretraining=PretrainSettings("simmim", "primus_s", epochs=100, iters_per_epoch=250, batch_size=2,
                                     method_kwargs=(("head", "skip"),)),
        cost=_GPU_COST,
        notes=("equal steps: on a GPU nnU-Net's CNN and Primus-S cost about the same per step (not measured here)",)),
)}
DEFAULT_BUDGET = "short"


def get_budget(name: str) -> StudyBudget:
    """The budget called ``name`` (did-you-mean error otherwise)."""
    return BUDGETS[look_up_option(name, BUDGETS, "budget")]


def get_trainer(name: str) -> StudyTrainer:
    """The compared trainer called ``name`` (did-you-mean error otherwise)."""
    return TRAINERS[look_up_option(name, TRAINERS, "trainer")]
