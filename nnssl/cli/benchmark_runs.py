"""Fine-tuning runs of the study: one private nnU-Net folder per subset, ``nnUNetv2_train``, metrics, result file.

Each (k, repeat) subset gets ``subsets/<k>_r<repeat>/nnUNet_preprocessed/DatasetXXX_Name``: links to every entry of
the real preprocessed dataset (plans, data, ``gt_segmentations``, the pretraining link) plus its own
``splits_final.json`` with one split, ``{"train": <k cases>, "val": <held-out cases>}``. Every run is then nnU-Net's
own command on fold 0 with ``nnUNet_preprocessed``/``nnUNet_results`` pointed at that subset:

    nnUNetv2_train D 3d_fullres 0 -tr <variant> -p <plans> -device <device> [--c | --val]

so the user's own ``splits_final.json`` and results stay untouched. nnU-Net's final validation of fold 0 is the
evaluation: it predicts exactly the held-out cases (sliding window with mirroring, as ``nnUNetv2_predict`` does) and
scores them with nnU-Net's evaluator. A second prediction without test-time mirroring,

    nnUNetv2_predict -i <held-out images> -o fold_0/validation_no_tta ... -f 0 --disable_tta -chk checkpoint_final.pth

gives the metrics without TTA (mirroring averages away an under-trained model's errors, and its successes). The result
file is written last and atomically, so a killed run leaves none and the next invocation continues it from nnU-Net's
``checkpoint_latest.pth`` (``--c``).
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nnssl.cli.benchmark_commands import Executor
from nnssl.cli.benchmark_metrics import folder_metrics, run_metrics, to_json_safe
from nnssl.cli.benchmark_prepare import nnunet_dataset_id
from nnssl.cli.benchmark_study import (
    CHECKPOINT_FINAL,
    CONFIGURATION,
    FOLD,
    NNUNET_PREPROCESSED,
    NNUNET_RESULTS,
    VALIDATION_SUMMARY,
    RunStatus,
    Study,
    StudyRun,
)
from nnssl.cli.benchmark_subsets import label_count_name
from nnssl.config.plans import write_json_atomic
from nnssl.data.raw_dataset import list_raw_cases, load_dataset_json
from nnssl.errors import NnsslError
from nnssl.models.flops import COMPUTE_FILE
from nnssl.paths import env_folder

SPLITS_FILE = "splits_final.json"
NNUNET_PLANS_COPY = "plans.json"  # what nnU-Net writes beside the folds: the plans the run really used
BACKGROUND = 0
RESULT_VERSION = 3  # a stored result of another version is rescored from its predictions (no training)
NO_TTA_FOLDER = "validation_no_tta"
HELDOUT_IMAGES = "heldout_images"  # links to the held-out cases' raw images, the input of the no-TTA prediction
GT_FOLDER = "gt_segmentations"  # nnU-Net's copy of the labels in its preprocessed dataset


def foreground_labels(raw_folder: Path) -> list[int]:
    """Foreground label values of ``dataset.json``.

    Raises:
        NnsslError: region-based labels (lists), which the study does not score.
    """
    labels = load_dataset_json(raw_folder).get("labels", {})
    values = []
    for name, value in labels.items():
        if not isinstance(value, int):
            raise NnsslError(f"{raw_folder}/dataset.json label {name!r} is a region {value}; the study scores "
                             "integer labels only")
        if value != BACKGROUND:
            values.append(value)
    if not values:
        raise NnsslError(f"{raw_folder}/dataset.json declares no foreground label; add e.g. \"tumour\": 1")
    return sorted(values)


def prepare_subset(study: Study, run: StudyRun) -> Path:
    """The subset's private ``nnUNet_preprocessed`` root (links + one-split ``splits_final.json``)."""
    real = env_folder(NNUNET_PREPROCESSED) / study.dataset_name
    if not real.is_dir():
        raise NnsslError(f"{real} is missing; the preparation step `nnUNetv2_plan_and_preprocess` did not run")
    root = study.subset_root(run.subset) / NNUNET_PREPROCESSED
    private = root / study.dataset_name
    private.mkdir(parents=True, exist_ok=True)
    for entry in real.iterdir():
        link = private / entry.name
        if entry.name == SPLITS_FILE or entry.name.startswith(".") or link.is_symlink() or link.exists():
            continue
        with contextlib.suppress(FileExistsError):  # a concurrent run of the same subset linked it first
            link.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    overlap = set(run.train_cases) & set(study.heldout)
    if overlap:  # draw_subset works on the pool without the held-out cases; this guards the invariant
        raise NnsslError(f"internal error: held-out cases {sorted(overlap)} in the training subset {run.subset}")
    write_json_atomic([{"train": list(run.train_cases), "val": list(study.heldout)}], private / SPLITS_FILE)
    return root


def subset_environment(study: Study, run: StudyRun, base_env: Mapping[str, str]) -> dict[str, str]:
    """``base_env`` with ``nnUNet_preprocessed``/``nnUNet_results`` pointing into the run's subset folder."""
    root = study.subset_root(run.subset)
    return {**base_env, NNUNET_PREPROCESSED: str((root / NNUNET_PREPROCESSED).resolve()),
            NNUNET_RESULTS: str((root / NNUNET_RESULTS).resolve())}


def train_command(study: Study, run: StudyRun, status: RunStatus) -> list[str]:
    """``nnUNetv2_train`` for ``run``: ``--val`` when only the validation is missing, ``--c`` to continue."""
    command = ["nnUNetv2_train", nnunet_dataset_id(study.raw_folder), CONFIGURATION, str(FOLD), "-tr", run.variant,
               "-p", run.trainer.plans, "-device", study.config.device]
    folder = study.model_folder(run)
    if (folder / CHECKPOINT_FINAL).is_file():
        return [*command, "--val"]
    if status == RunStatus.PARTIAL:
        return [*command, "--c"]  # nnU-Net starts afresh when no checkpoint is there yet
    return command


def heldout_images(study: Study) -> Path:
    """``<output>/heldout_images``: links to every channel file of the held-out cases (created once, race-free)."""
    folder = Path(study.config.output) / HELDOUT_IMAGES
    folder.mkdir(parents=True, exist_ok=True)
    by_id = {case.identifier: case for case in list_raw_cases(study.raw_folder)}
    for identifier in study.heldout:
        for image in by_id[identifier].files:
            link = folder / Path(image).name
            if not link.is_symlink():
                with contextlib.suppress(FileExistsError):
                    link.symlink_to(Path(image).resolve())
    return folder


def predict_no_tta_command(study: Study, run: StudyRun) -> list[str]:
    """``nnUNetv2_predict`` of the held-out cases with the run's final checkpoint and mirroring off."""
    return ["nnUNetv2_predict", "-i", str(heldout_images(study)), "-o", str(study.model_folder(run) / NO_TTA_FOLDER),
            "-d", nnunet_dataset_id(study.raw_folder), "-c", CONFIGURATION, "-tr", run.variant, "-p",
            run.trainer.plans, "-f", str(FOLD), "--disable_tta", "-chk", CHECKPOINT_FINAL, "-device",
            study.config.device, "-npp", "1", "-nps", "1"]


def read_compute(folder: Path) -> dict[str, Any] | None:
    """The run's ``compute.json`` (steps, training seconds, FLOPs); None when the trainer wrote none."""
    try:
        return json.loads((folder / COMPUTE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def execute_run(study: Study, run: StudyRun, base_env: Mapping[str, str], execute: Executor) -> dict[str, Any]:
    """Train (or continue) and score ``run``; returns its result dict (also written to its result file)."""
    status = study.status(run)
    tolerance = study.config.nsd_tolerance_mm
    if status == RunStatus.DONE:
        result = json.loads(study.result_file(run).read_text())
        if result.get("nsd_tolerance_mm") == tolerance and result.get("version") == RESULT_VERSION:
            return result
        if not (study.model_folder(run) / VALIDATION_SUMMARY).is_file():
            print(f"nnssl: {run.name}: its predictions are gone; keeping its stored metrics")
            return result
        wall, resumed = result.get("wall_s"), result.get("resumed", False)  # rescore only (tolerance, version)
    else:
        wall, resumed = None, status == RunStatus.PARTIAL
        if status != RunStatus.TRAINED:
            prepare_subset(study, run)
            wall = execute(train_command(study, run, status), subset_environment(study, run, base_env),
                           study.log_file(run.name))
    folder = study.model_folder(run)
    summary = folder / VALIDATION_SUMMARY
    labels = foreground_labels(study.raw_folder)
    metrics = run_metrics(summary, labels, tolerance)
    scored = sorted(metrics["per_case"])
    if scored != sorted(study.heldout):
        raise NnsslError(f"{summary} scores {scored}, not the held-out cases {sorted(study.heldout)}; delete "
                         f"{folder} and rerun nnssl_benchmark")
    no_tta = folder / NO_TTA_FOLDER
    ending = load_dataset_json(study.raw_folder)["file_ending"]
    if not all((no_tta / f"{case}{ending}").is_file() for case in study.heldout):
        execute(predict_no_tta_command(study, run), subset_environment(study, run, base_env),
                study.log_file(f"{run.name}__no_tta"))
    metrics_no_tta = folder_metrics(no_tta, env_folder(NNUNET_PREPROCESSED) / study.dataset_name / GT_FOLDER,
                                    list(study.heldout), labels, tolerance)
    result = {"version": RESULT_VERSION, "run": run.name, "trainer": run.trainer.name, "variant": run.variant,
              "plans": run.trainer.plans,
              "pretrained": run.trainer.pretrained, "k": label_count_name(run.k), "num_train": len(run.train_cases),
              "repeat": run.repeat, "train_cases": list(run.train_cases), "heldout": list(study.heldout),
              "nsd_tolerance_mm": tolerance, **_network_facts(folder.parent / NNUNET_PLANS_COPY),
              "wall_s": wall, "resumed": resumed, "model_folder": str(folder), "compute": read_compute(folder),
              "metrics": metrics, "metrics_no_tta": metrics_no_tta}
    result = to_json_safe(result)
    write_json_atomic(result, study.result_file(run))
    return result


def _network_facts(plans_file: Path) -> dict[str, Any]:
    """Patch size, spacing and network class of the run, from the plans nnU-Net saved beside the fold."""
    try:
        conf = json.loads(plans_file.read_text())["configurations"][CONFIGURATION]
    except (OSError, json.JSONDecodeError, KeyError):
        return {"patch_size": None, "spacing": None, "network": None}
    network = conf.get("architecture", {}).get("network_class_name", "")
    return {"patch_size": conf.get("patch_size"), "spacing": conf.get("spacing"),
            "network": network.rsplit(".", 1)[-1] or None}
