"""The one module ``nnUNet_extTrainer`` finds: re-exports the nnssl trainers for nnU-Net's ``-tr`` search.

nnunetv2 2.8 imports every file in the ``nnUNet_extTrainer`` folders as a top-level module, takes the first class
with the requested name and drops those modules from ``sys.modules`` again. So this folder holds only this uniquely
named file, with absolute imports of the installed package and no import-time side effects. Point the variable here:

    export nnUNet_extTrainer=$(python -c "import nnssl_trainers.ext as e; print(e.FOLDER)")
"""
from __future__ import annotations

from nnssl_trainers.short import (
    SSLSwinTrainer_scratch_short,
    SSLSwinTrainer_scratch_tiny,
    SSLSwinTrainer_short,
    SSLSwinTrainer_tiny,
    SSLViTTrainer_scratch_short,
    SSLViTTrainer_scratch_tiny,
    SSLViTTrainer_short,
    SSLViTTrainer_tiny,
    nnsslUNetTrainer_short,
    nnsslUNetTrainer_tiny,
)
from nnssl_trainers.study import SSLViTTrainer_scratch_study, SSLViTTrainer_study, nnsslUNetTrainer_study
from nnssl_trainers.swin import SSLSwinTrainer, SSLSwinTrainer_scratch
from nnssl_trainers.vit import (
    SSLViTTrainer,
    SSLViTTrainer_patchdecode,
    SSLViTTrainer_patchdecode_scratch,
    SSLViTTrainer_scratch,
)

__all__ = [
    "SSLViTTrainer", "SSLViTTrainer_scratch", "SSLSwinTrainer", "SSLSwinTrainer_scratch",
    "SSLViTTrainer_patchdecode", "SSLViTTrainer_patchdecode_scratch",
    "SSLViTTrainer_short", "SSLViTTrainer_scratch_short", "SSLViTTrainer_tiny", "SSLViTTrainer_scratch_tiny",
    "SSLSwinTrainer_short", "SSLSwinTrainer_scratch_short", "SSLSwinTrainer_tiny", "SSLSwinTrainer_scratch_tiny",
    "nnsslUNetTrainer_short", "nnsslUNetTrainer_tiny",
    "SSLViTTrainer_study", "SSLViTTrainer_scratch_study", "nnsslUNetTrainer_study",
]
