"""Fixtures for the fine-tuning tests: a tiny labeled phantom dataset planned and preprocessed by nnU-Net (once per
session), copied into per-test nnU-Net folders, and fake pretraining checkpoints written with the real checkpoint API.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest

import nnssl_trainers.ext

DATASET_ID = 501
CASE_SHAPE = (32, 64, 64)  # voxels (Z, Y, X); = one vit_tiny / swin_tiny patch
CASE_SPACING = (2.0, 1.0, 1.0)  # mm
NUM_TRAIN, NUM_TEST = 6, 1  # 5 folds need >= 5 training cases
SEED = 7
# Few workers: 2 cores shared by several engineers. nnUNet_n_proc_DA=0 would crash nnU-Net 2.8.1's planner.
QUIET_ENV = {"nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1", "OMP_NUM_THREADS": "1", "nnUNet_compile": "false"}
NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
NNSSL_FOLDERS = ("nnssl_raw", "nnssl_preprocessed", "nnssl_results")


def load_helper(name: str) -> ModuleType:
    """A helper module in this folder, by path (tests/ is not a package; unique module name avoids clashes)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"nnssl_tests_trainers_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def planned_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/{nnUNet_raw, nnUNet_preprocessed}`` with Dataset501 phantoms, nnU-Net-planned (3d_fullres only)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    from nnssl.data.phantoms import SpacingRange, write_phantom_dataset

    root = tmp_path_factory.mktemp("nnunet_dataset")
    with pytest.MonkeyPatch.context() as mp:
        for var in NNUNET_FOLDERS:
            (root / var).mkdir()
            mp.setenv(var, str(root / var))
        for var, value in QUIET_ENV.items():
            mp.setenv(var, value)
        spacing = SpacingRange(slice_mm=(CASE_SPACING[0],) * 2, inplane_mm=(CASE_SPACING[1],) * 2)
        write_phantom_dataset(root / "nnUNet_raw" / f"Dataset{DATASET_ID}_PhantomLungTumour", NUM_TRAIN, True, SEED,
                              num_test=NUM_TEST, num_processes=1, shape=CASE_SHAPE, spacing=spacing, progress=False)
        extract_fingerprints([DATASET_ID], num_processes=1, check_dataset_integrity=False, verbose=False)
        plan_experiments([DATASET_ID])
        preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=[1], show_progress_bar=False)
    return root


@pytest.fixture
def nnunet_env(planned_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Per-test copies of the planned dataset; nnU-Net and nnssl folders and ``nnUNet_extTrainer`` exported."""
    folders: dict[str, Path] = {}
    for var in NNUNET_FOLDERS:
        source = planned_dataset / var
        folders[var] = tmp_path / var
        if var == "nnUNet_results":
            folders[var].mkdir()
        else:
            shutil.copytree(source, folders[var])
    for var in NNSSL_FOLDERS:
        folders[var] = tmp_path / var
        folders[var].mkdir()
    for var, path in folders.items():
        monkeypatch.setenv(var, str(path))
    for var, value in QUIET_ENV.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("nnUNet_extTrainer", nnssl_trainers.ext.FOLDER)
    folders["dataset"] = folders["nnUNet_preprocessed"] / f"Dataset{DATASET_ID}_PhantomLungTumour"
    folders["raw_dataset"] = folders["nnUNet_raw"] / f"Dataset{DATASET_ID}_PhantomLungTumour"
    return folders


@pytest.fixture
def fake_pretraining() -> ModuleType:
    """``fake_pretraining`` helper: ``write_fake_checkpoint`` / ``write_fake_run``."""
    return load_helper("fake_pretraining")


def subprocess_env() -> dict[str, str]:
    """The current environment (with the test's folders) for CLI subprocesses."""
    return dict(os.environ)
