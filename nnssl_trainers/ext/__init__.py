"""Folder for ``nnUNet_extTrainer`` (nnunetv2 skips ``__init__`` when it scans it; this file only ships the folder).

    export nnUNet_extTrainer=$(python -c "import nnssl_trainers.ext as e; print(e.FOLDER)")
"""
from __future__ import annotations

from pathlib import Path

FOLDER = str(Path(__file__).resolve().parent)
