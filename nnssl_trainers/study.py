"""Label-efficiency study budgets at **equal compute** (``nnssl_benchmark --budget short``).

Every compared trainer gets about the same CPU-seconds of training, not the same steps: on the study phantoms
(32x48x48, batch 2, one thread) nnU-Net's CNN costs :data:`CNN_STEP_S` per iteration and the ``vit_tiny``
``PrimusSkip`` :data:`VIT_STEP_S`, so the ViTs get proportionally more iterations. ``nnssl.cli.benchmark_budget``
names these classes with the same epochs and iterations (a test checks that the two agree), and each run writes what it
really spent to ``compute.json``.
"""
from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnssl_trainers.short import Budget, _Budgeted
from nnssl_trainers.vit import SSLViTTrainer, SSLViTTrainer_scratch

# Seconds per training iteration planned from the tuning runs (two at a time, data augmentation included). The
# committed study measured more (compute.json: ViT 0.55 s, CNN 3.3 s per step), so there its ViTs trained about 1.2x
# the CNN's seconds; docs/benchmark.md gives the numbers. Recalibrate both before the next study.
CNN_STEP_S = 2.4
VIT_STEP_S = 0.34
STUDY_COMPUTE_S = 120.0  # training seconds per run: 36 runs, 2 at a time, fit the study's 60 minutes
# Few epochs for the CNN: nnU-Net's 2 validation iterations per epoch would otherwise cost it a tenth of its budget.
STUDY_CNN = Budget(epochs=5, iterations_per_epoch=10, val_iterations_per_epoch=2, save_every=1)  # 50 x 2.4 s
STUDY_VIT = Budget(epochs=18, iterations_per_epoch=20, val_iterations_per_epoch=2, save_every=3,
                   ssl_peak_lr=1e-3)  # 360 x 0.34 s


class SSLViTTrainer_study(_Budgeted, SSLViTTrainer):
    """:class:`SSLViTTrainer` on the :data:`STUDY_VIT` budget."""

    budget = STUDY_VIT


class SSLViTTrainer_scratch_study(_Budgeted, SSLViTTrainer_scratch):
    """:class:`SSLViTTrainer_scratch` on the :data:`STUDY_VIT` budget."""

    budget = STUDY_VIT


class nnsslUNetTrainer_study(_Budgeted, nnUNetTrainer):
    """nnU-Net's default CNN on the :data:`STUDY_CNN` budget (the same training seconds as the ViTs)."""

    budget = STUDY_CNN
