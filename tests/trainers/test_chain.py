"""The user's whole fine-tuning workflow on phantoms, each step a subprocess typed exactly as a user types it:

    nnssl_transfer_plans -d 501 -pd 500 -np 1
    nnUNetv2_train 501 3d_fullres 0 -tr SSLViTTrainer_tiny -device cpu        # default nnUNetPlans, odd patch size
    nnUNetv2_find_best_configuration 501 -c 3d_fullres -tr SSLViTTrainer_tiny -f 0 1 --disable_ensembling
    nnUNetv2_predict -i imagesTs -o pred -d 501 -c 3d_fullres -tr SSLViTTrainer_tiny -f 0 1 -device cpu
    nnUNetv2_evaluate_folder labelsTs pred -djfile pred/dataset.json -pfile pred/plans.json

Fold 1 (for the fold ensemble) is trained and validated in process the way ``nnUNetv2_train ... 1`` and ``--val`` do,
to stay within the time budget. Prediction runs in a fresh environment holding only ``nnUNet_results`` and
``nnUNet_extTrainer``, after the SSL checkpoint has been moved away.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

TRAINER = "SSLViTTrainer_tiny"
ODD_PATCH = [28, 60, 68]  # nnU-Net's plan, off the ViT grid -> (24, 56, 64)
STEP_TIMEOUT_S = 900  # hang guard, not a speed target
CARRIED_ENV = ("PATH", "HOME", "LANG", "TMPDIR", "OMP_NUM_THREADS", "nnUNet_def_n_proc", "nnUNet_n_proc_DA",
               "nnUNet_compile")


def _run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{output[-4000:]}"
    return output


@pytest.mark.slow
def test_transfer_train_predict_evaluate(nnunet_env: dict[str, Path], fake_pretraining: ModuleType,
                                         tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the venv's console scripts
    checkpoint = fake_pretraining.write_fake_run(nnunet_env["nnssl_results"], "vit_tiny", patch_size=(32, 64, 64))
    out = _run(["nnssl_transfer_plans", "-d", "501", "-pd", "500", "-np", "1"], env, tmp_path)
    assert "linked" in out and (nnunet_env["dataset"] / "nnsslPlans_3d_fullres").is_dir()

    plans_file = nnunet_env["dataset"] / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["3d_fullres"]["patch_size"] = ODD_PATCH
    plans_file.write_text(json.dumps(plans))
    out = _run(["nnUNetv2_train", "501", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"], env, tmp_path)
    assert "100.0% of encoder parameters" in out and "Mean Validation Dice" in out

    trainer = get_trainer_from_args("501", "3d_fullres", 1, TRAINER, "nnUNetPlans", device=torch.device("cpu"))
    trainer.run_training()
    validator = get_trainer_from_args("501", "3d_fullres", 1, TRAINER, "nnUNetPlans", device=torch.device("cpu"))
    maybe_load_checkpoint(validator, continue_training=False, validation_only=True)  # what --val does
    validator.perform_actual_validation()

    out = _run(["nnUNetv2_find_best_configuration", "501", "-c", "3d_fullres", "-tr", TRAINER, "-f", "0", "1",
                "--disable_ensembling", "-np", "1"], env, tmp_path)
    assert f"-tr {TRAINER}" in out

    model = nnunet_env["nnUNet_results"] / "Dataset501_PhantomLungTumour" / f"{TRAINER}__nnUNetPlans__3d_fullres"
    assert json.loads((model / "plans.json").read_text())["configurations"]["3d_fullres"]["patch_size"] == [24, 56, 64]
    shutil.move(checkpoint.parent, tmp_path / "pretraining_moved_away")
    fresh = {k: env[k] for k in CARRIED_ENV if k in env}
    fresh |= {"nnUNet_results": str(nnunet_env["nnUNet_results"]), "nnUNet_extTrainer": env["nnUNet_extTrainer"]}
    raw = nnunet_env["raw_dataset"]
    pred = tmp_path / "pred"
    _run(["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", "501", "-c", "3d_fullres", "-tr",
          TRAINER, "-f", "0", "1", "-device", "cpu", "-npp", "1", "-nps", "1"], fresh, tmp_path)
    assert sorted(p.name for p in pred.glob("*.nii.gz")) == sorted(p.name for p in (raw / "labelsTs").glob("*"))

    out = _run(["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(pred), "-djfile", str(pred / "dataset.json"),
                "-pfile", str(pred / "plans.json"), "-np", "1"], fresh, tmp_path)
    summary = json.loads((pred / "summary.json").read_text())
    dice = summary["foreground_mean"]["Dice"]
    assert 0.0 <= dice <= 1.0 or dice != dice  # NaN when neither prediction nor label has tumour
    print(f"fold 0+1 ensemble Dice on the held-out phantom: {dice}")
