"""Short-schedule variants: the same trainers on a small, fixed budget, for CPU studies, demos and tests.

nnU-Net's ``nnUNetTrainer_Xepochs`` keep 250 iterations per epoch; a budget here fixes epochs *and* iterations. The
``nnsslUNetTrainer_*`` classes put nnU-Net's default CNN on the same budget, for equal-budget comparisons.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnssl_trainers.base import SSLTrainerBase, respect_thread_limit
from nnssl_trainers.compute import ComputeRecord, training_step_flops
from nnssl_trainers.swin import SSLSwinTrainer, SSLSwinTrainer_scratch
from nnssl_trainers.vit import SSLViTTrainer, SSLViTTrainer_scratch


@dataclass(frozen=True)
class Budget:
    """Epochs, iterations per epoch (train / validation) and checkpoint interval of a short schedule.

    ``ssl_peak_lr`` replaces the SSL trainers' AdamW peak LR (3e-4 is tuned for nnU-Net's 250,000 steps; in a few
    hundred steps it barely moves the decoder off its initial 50/50 output). nnU-Net's CNN keeps its own SGD LR.
    """

    epochs: int
    iterations_per_epoch: int
    val_iterations_per_epoch: int
    save_every: int
    ssl_peak_lr: float | None = None


SHORT = Budget(epochs=20, iterations_per_epoch=25, val_iterations_per_epoch=5, save_every=5, ssl_peak_lr=1e-3)  # 500
TINY = Budget(epochs=2, iterations_per_epoch=2, val_iterations_per_epoch=1, save_every=1, ssl_peak_lr=1e-3)  # tests


class _Budgeted:
    """Mixin placed before a trainer class: applies ``budget`` after the trainer's own ``__init__``, and records the
    run's steps, training seconds and FLOPs in ``compute.json`` (see :mod:`nnssl_trainers.compute`)."""

    budget: ClassVar[Budget]
    _compute: ComputeRecord | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)  # type: ignore[call-arg]
        respect_thread_limit(device)  # nnsslUNetTrainer_* too: nnU-Net's CNN gets the same override
        self.num_epochs = self.budget.epochs
        self.num_iterations_per_epoch = self.budget.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.budget.val_iterations_per_epoch
        self.save_every = self.budget.save_every
        if self.budget.ssl_peak_lr is not None and isinstance(self, SSLTrainerBase):
            self.initial_lr = self.budget.ssl_peak_lr

    def on_train_start(self) -> None:
        super().on_train_start()  # type: ignore[misc]
        trainer: nnUNetTrainer = self  # type: ignore[assignment]
        shape = (trainer.batch_size, trainer.num_input_channels, *trainer.configuration_manager.patch_size)
        flops = training_step_flops(trainer.network, shape)
        steps = (self.budget.epochs - trainer.current_epoch) * self.budget.iterations_per_epoch
        self._compute = ComputeRecord(steps, shape, flops, resumed=trainer.current_epoch > 0)

    def on_train_end(self) -> None:
        super().on_train_end()  # type: ignore[misc]
        trainer: nnUNetTrainer = self  # type: ignore[assignment]
        if self._compute is not None and trainer.local_rank == 0:
            self._compute.write(trainer.output_folder)


class SSLViTTrainer_short(_Budgeted, SSLViTTrainer):
    budget = SHORT


class SSLViTTrainer_scratch_short(_Budgeted, SSLViTTrainer_scratch):
    budget = SHORT


class SSLViTTrainer_tiny(_Budgeted, SSLViTTrainer):
    budget = TINY


class SSLViTTrainer_scratch_tiny(_Budgeted, SSLViTTrainer_scratch):
    budget = TINY


class SSLSwinTrainer_short(_Budgeted, SSLSwinTrainer):
    budget = SHORT


class SSLSwinTrainer_scratch_short(_Budgeted, SSLSwinTrainer_scratch):
    budget = SHORT


class SSLSwinTrainer_tiny(_Budgeted, SSLSwinTrainer):
    budget = TINY


class SSLSwinTrainer_scratch_tiny(_Budgeted, SSLSwinTrainer_scratch):
    budget = TINY


class nnsslUNetTrainer_short(_Budgeted, nnUNetTrainer):
    """nnU-Net's default CNN on the :data:`SHORT` budget (equal-budget baseline)."""

    budget = SHORT


class nnsslUNetTrainer_tiny(_Budgeted, nnUNetTrainer):
    """nnU-Net's default CNN on the :data:`TINY` budget."""

    budget = TINY
