"""Settings of the phantom study, chosen on a separate phantom set: never on the study's held-out cases.

Tuning data: Dataset502 (24 labeled phantoms, ``--seed 1000``; the study's labeled phantoms use seed 0), with one
fixed validation set (phantom_0016..0023) and six training subsets (three of k=4, three of k=2) written as nnU-Net
folds 0-5 of ``splits_final.json``. Each arm is an nnU-Net trainer class built here on a chosen budget; every run is
``nnUNetv2_train 502 3d_fullres F -tr ARM -p PLANS``, then ``nnUNetv2_predict --disable_tta`` of the validation cases.
One JSON line per run (Dice with and without TTA, wall seconds) goes to ``<work>/tune_results.jsonl``.

    python docs/benchmark_phantoms/tuning/tune.py --work /tmp/nnssl_tuning --arms vit vit_scratch --folds 3 4 5 \\
        --epochs 18 --iterations 20        # the study's ViT budget (360 steps), k=2
    python docs/benchmark_phantoms/tuning/tune.py --work /tmp/nnssl_tuning --arms vit_patchdecode_scratch ...

Arms: ``vit`` (SSLViTTrainer, pretrained), ``vit_scratch``, ``vit_patchdecode_scratch``, ``cnn`` (nnU-Net's CNN on
nnUNetPlans). The first call prepares the data and the SimMIM (skip head) pretraining of ``vit_tiny`` (1000 steps).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

TUNE_ID, TUNE_NAME, PRETRAIN_ID = "502", "Dataset502_PhantomTune", "500"
PHANTOMS = ["--shape", "32", "48", "48", "--spacing", "4", "3", "--tumour-mm", "15", "40"]
CASES = [f"phantom_{i:04d}" for i in range(24)]
VALIDATION = CASES[16:]
SUBSETS = [CASES[0:4], CASES[4:8], CASES[8:12], CASES[12:14], CASES[14:16], [CASES[0], CASES[4]]]
ARMS = {"vit": ("SSLViTTrainer", "nnsslPlans"), "vit_scratch": ("SSLViTTrainer_scratch", "nnsslPlans"),
        "vit_patchdecode_scratch": ("SSLViTTrainer_patchdecode_scratch", "nnsslPlans"),
        "cnn": ("nnUNetTrainer", "nnUNetPlans")}
EXT_MODULE = '''"""Tuning trainers: {base} on a budget set by tune.py (written by it; do not edit)."""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnssl_trainers.short import Budget, _Budgeted
from nnssl_trainers.vit import SSLViTTrainer, SSLViTTrainer_scratch, SSLViTTrainer_patchdecode_scratch

BUDGET = Budget(epochs={epochs}, iterations_per_epoch={iterations}, val_iterations_per_epoch=2, save_every=1000,
                ssl_peak_lr=1e-3)
'''


def _run(command: list[str], log: Path, env: dict[str, str]) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, check=True)


def prepare(work: Path, env: dict[str, str]) -> None:
    """Phantoms, preprocessing, pretraining and the matched plans (each skipped when its output exists)."""
    raw, pre = Path(env["nnUNet_raw"]) / TUNE_NAME, Path(env["nnUNet_preprocessed"]) / TUNE_NAME
    steps = [
        (Path(env["nnssl_raw"]), ["nnssl_make_phantoms", "--unlabeled", "40", "-d", PRETRAIN_ID, *PHANTOMS]),
        (raw, ["nnssl_make_phantoms", "--labeled", "24", "-d", TUNE_ID, "-n", "PhantomTune", "--seed", "1000",
               *PHANTOMS]),
        (Path(env["nnssl_preprocessed"]), ["nnssl_plan_and_preprocess", "-d", PRETRAIN_ID, "-np", "2"]),
        (pre / "nnUNetPlans_3d_fullres", ["nnUNetv2_plan_and_preprocess", "-d", TUNE_ID, "-c", "3d_fullres",
                                          "-np", "2"]),
        (Path(env["nnssl_results"]), ["nnssl_pretrain", "-d", PRETRAIN_ID, "-m", "simmim", "-e", "vit_tiny",
                                      "--epochs", "10", "--iters-per-epoch", "100", "--lr", "1e-3", "-np", "1",
                                      "--method-kwargs", "head=skip"]),
        (pre / "nnsslPlans_3d_fullres", ["nnssl_transfer_plans", "-d", TUNE_ID, "-pd", PRETRAIN_ID, "--patch-size",
                                         "32", "48", "48", "-np", "2"]),
    ]
    for number, (done, command) in enumerate(steps):
        if not done.exists():
            print("$", " ".join(command), flush=True)
            _run(command, work / "logs" / f"prepare_{number}_{command[0]}.log", env)
    (pre / "splits_final.json").write_text(json.dumps([{"train": s, "val": VALIDATION} for s in SUBSETS], indent=1))
    images = work / "validation_images"
    images.mkdir(exist_ok=True)
    for case in VALIDATION:
        link = images / f"{case}_0000.nii.gz"
        if not link.is_symlink():
            link.symlink_to(raw / "imagesTr" / f"{case}_0000.nii.gz")


def write_arms(work: Path, tag: str, epochs: int, iterations: int) -> dict[str, tuple[str, str]]:
    """One ext module with a trainer class per arm on this budget; returns arm -> (class, plans)."""
    folder = work / "ext"
    folder.mkdir(exist_ok=True)
    lines = [EXT_MODULE.format(base="the compared trainers", epochs=epochs, iterations=iterations)]
    arms = {}
    for arm, (base, plans) in ARMS.items():
        name = f"T_{tag}_{arm}"
        lines.append(f"class {name}(_Budgeted, {base}):\n    budget = BUDGET\n")
        arms[arm] = (name, plans)
    (folder / f"tuning_{tag}.py").write_text("\n\n".join(lines))
    return arms


def dice(folder: Path, reference: Path) -> float:
    """Mean foreground Dice over the validation cases (cases with nothing to segment are skipped)."""
    scores = []
    for case in VALIDATION:
        p = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{case}.nii.gz"))) == 1
        g = sitk.GetArrayFromImage(sitk.ReadImage(str(reference / f"{case}.nii.gz"))) == 1
        if p.sum() + g.sum():
            scores.append(2 * (p & g).sum() / (p.sum() + g.sum()))
    return float(np.mean(scores))


def run_arm(work: Path, env: dict[str, str], tag: str, arm: str, trainer: str, plans: str, fold: int) -> dict:
    out = Path(env["nnUNet_results"]) / TUNE_NAME / f"{trainer}__{plans}__3d_fullres" / f"fold_{fold}"
    start = time.time()
    if not (out / "validation" / "summary.json").is_file():
        _run(["nnUNetv2_train", TUNE_ID, "3d_fullres", str(fold), "-tr", trainer, "-p", plans, "-device", "cpu"],
             work / "logs" / f"{tag}_{arm}_{fold}.log", env)
    wall = time.time() - start
    if not (out / "pred_no_tta" / f"{VALIDATION[-1]}.nii.gz").is_file():
        _run(["nnUNetv2_predict", "-i", str(work / "validation_images"), "-o", str(out / "pred_no_tta"), "-d",
              TUNE_ID, "-c", "3d_fullres", "-tr", trainer, "-p", plans, "-f", str(fold), "--disable_tta", "-chk",
              "checkpoint_final.pth", "-device", "cpu", "-npp", "1", "-nps", "1"],
             work / "logs" / f"{tag}_{arm}_{fold}_no_tta.log", env)
    reference = Path(env["nnUNet_preprocessed"]) / TUNE_NAME / "gt_segmentations"
    result = {"tag": tag, "arm": arm, "fold": fold, "k": len(SUBSETS[fold]), "tta": round(dice(out / "validation",
                                                                                           reference), 4),
              "no_tta": round(dice(out / "pred_no_tta", reference), 4), "wall_s": round(wall)}
    with (work / "tune_results.jsonl").open("a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="working folder (data, results, logs)")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), required=True)
    parser.add_argument("--folds", nargs="+", type=int, choices=range(len(SUBSETS)), required=True,
                        help="0-2: k=4 subsets, 3-5: k=2 subsets")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--iterations", type=int, required=True, help="iterations per epoch")
    parser.add_argument("--tag", default=None, help="name of this budget (default e<epochs>i<iterations>)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    work = args.work.resolve()
    bin_folder = str(Path(sys.executable).parent)
    env = {**os.environ, **{v: str(work / v) for v in ("nnssl_raw", "nnssl_preprocessed", "nnssl_results",
                                                         "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")},
           "nnUNet_extTrainer": str(work / "ext"), "PATH": f"{bin_folder}:{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1", "nnUNet_compile": "false"}
    work.mkdir(parents=True, exist_ok=True)
    prepare(work, {**env, "nnUNet_n_proc_DA": "2"})
    tag = args.tag or f"e{args.epochs}i{args.iterations}"
    arms = write_arms(work, tag, args.epochs, args.iterations)
    jobs = [(arm, fold) for fold in args.folds for arm in args.arms]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_arm, work, env, tag, arm, *arms[arm], fold) for arm, fold in jobs]
        for future in futures:
            future.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
