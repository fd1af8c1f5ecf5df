"""Label-efficiency study budget: the three compared trainers on one small, equal CPU budget (``nnssl_benchmark``).

``nnssl_benchmark --budget short`` fine-tunes 3 trainers x label counts x repeats (36 runs for ``--labels 2 4 8 all
--folds 0 1 2``) and must finish on CPU phantoms in under 45 min on 2 cores. nnU-Net's default CNN costs about
0.6 s per step at 32x48x48 (batch 2, one thread), 10x the ``vit_tiny`` Primus, so the
:data:`~nnssl_trainers.short.SHORT` budget (500 steps) would take over an hour; :data:`STUDY` is 200 steps (the whole
study: 37 min). All three trainers get the same epochs and iterations, so the comparison stays equal-budget.
"""
from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnssl_trainers.short import Budget, _Budgeted
from nnssl_trainers.vit import SSLViTTrainer, SSLViTTrainer_scratch

STUDY = Budget(epochs=10, iterations_per_epoch=20, val_iterations_per_epoch=2, save_every=2, ssl_peak_lr=1e-3)  # 200


class SSLViTTrainer_study(_Budgeted, SSLViTTrainer):
    """:class:`SSLViTTrainer` on the :data:`STUDY` budget."""

    budget = STUDY


class SSLViTTrainer_scratch_study(_Budgeted, SSLViTTrainer_scratch):
    """:class:`SSLViTTrainer_scratch` on the :data:`STUDY` budget."""

    budget = STUDY


class nnsslUNetTrainer_study(_Budgeted, nnUNetTrainer):
    """nnU-Net's default CNN on the :data:`STUDY` budget (equal-budget baseline)."""

    budget = STUDY
