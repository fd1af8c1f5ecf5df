"""The study's preparation: pretraining data -> pretraining -> nnU-Net preprocessing -> matched plans.

Each step is the real console command and is skipped when its output is already complete, so a finished pretraining
of the pretraining dataset (same method and encoder) is reused and a killed one continues with ``--c``:

    nnssl_plan_and_preprocess -d PD -np N                      # only when pretraining must run
    nnssl_pretrain -d PD -m METHOD -e ENCODER --epochs ... --device D [--c]
    nnUNetv2_plan_and_preprocess -d D -c 3d_fullres -np N
    nnssl_transfer_plans -d D --checkpoint <pretraining>/checkpoint_final.pth --patch-size <nnU-Net's> -np N

The matched plans use nnU-Net's 3d_fullres patch size (on the encoder's grid), so every compared trainer sees the same
field of view.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnssl.cli.benchmark_budget import NNUNET_PLANS, PretrainSettings
from nnssl.cli.benchmark_study import (
    CHECKPOINT_FINAL,
    CHECKPOINT_LATEST,
    CONFIGURATION,
    NNUNET_PREPROCESSED,
    StudyConfig,
)
from nnssl.config.plans import DEFAULT_PLANS_NAME
from nnssl.config.pretrain import PRETRAIN_CONFIG_FILE, PretrainConfig, run_folder_name
from nnssl.config.pretrained import PRETRAINED_KEY, file_sha256
from nnssl.data.dataset import complete_identifiers, data_folder, plans_file
from nnssl.data.raw_dataset import list_raw_cases
from nnssl.errors import NnsslError
from nnssl.models.finetune_arch import cap_patch_to_median, finetune_architecture
from nnssl.paths import PREPROCESSED, RAW, RESULTS, env_folder, find_dataset, parse_dataset_name


@dataclass(frozen=True)
class Step:
    """One preparation step: ``command`` None when its output is complete and reused."""

    name: str
    command: list[str] | None
    note: str
    seconds: float = 0.0


@dataclass(frozen=True)
class PretrainingTarget:
    """Where the study's pretraining lives."""

    dataset_name: str
    run_folder: Path

    @property
    def checkpoint(self) -> Path:
        return self.run_folder / CHECKPOINT_FINAL


def resolve_pretraining(config: StudyConfig) -> PretrainingTarget:
    """The pretraining dataset's full name (from ``$nnssl_results``, ``$nnssl_preprocessed`` or ``$nnssl_raw``) and
    the run folder of the budget's method and encoder.

    Raises:
        NnsslError: the pretraining dataset is in none of the three folders.
    """
    settings = config.budget.pretraining
    for variable in (RESULTS, PREPROCESSED, RAW):
        try:
            name = find_dataset(env_folder(variable), config.pretrain_dataset).name
        except NnsslError:
            continue
        run = env_folder(RESULTS) / name / run_folder_name(settings.method, settings.encoder, DEFAULT_PLANS_NAME)
        return PretrainingTarget(name, run)
    raise NnsslError(f"no pretraining dataset {config.pretrain_dataset!r} in ${RAW}, ${PREPROCESSED} or ${RESULTS}; "
                     f"create it with `nnssl_convert` or `nnssl_make_phantoms --unlabeled N -d "
                     f"{config.pretrain_dataset}`")


def nnunet_dataset_id(raw_folder: Path) -> str:
    """``Dataset501_X`` -> ``"501"`` (nnU-Net's commands take the number).

    Raises:
        NnsslError: the folder is not named ``DatasetXXX_Name``.
    """
    parsed = parse_dataset_name(Path(raw_folder).name)
    if parsed is None:
        raise NnsslError(f"{raw_folder} is not a DatasetXXX_Name folder; rename it the nnU-Net way")
    return str(parsed[0])


def _complete(folder: Path, identifiers: list[str]) -> bool:
    return set(identifiers) <= set(complete_identifiers(folder))


def pretraining_steps(config: StudyConfig, target: PretrainingTarget) -> list[Step]:
    """Steps for the pretraining data and the pretraining (nothing when its final checkpoint exists)."""
    settings = config.budget.pretraining
    cost = config.budget.cost
    if target.checkpoint.is_file():
        differences = settings_differences(settings, read_pretrain_config(target.run_folder))
        note = f"reusing the finished pretraining {target.checkpoint}"
        if differences is None:
            note += (f"; WARNING: its settings are unknown (no readable {PRETRAIN_CONFIG_FILE}); delete "
                     f"{target.run_folder} to pretrain with the budget's settings")
        elif differences:
            note += (f"; WARNING: it was trained with {', '.join(differences)} (run vs this budget): the study "
                     f"measures that run; delete {target.run_folder} to pretrain with the budget's settings")
        return [Step("pretraining", None, note)]
    steps = []
    preprocessed = env_folder(PREPROCESSED) / target.dataset_name
    raw = env_folder(RAW) / target.dataset_name
    identifiers = [c.identifier for c in list_raw_cases(raw)] if raw.is_dir() else []
    if not plans_file(preprocessed).is_file() or not _complete(data_folder(preprocessed), identifiers):
        steps.append(Step("pretraining data", ["nnssl_plan_and_preprocess", "-d", target.dataset_name, "-np",
                                               str(config.num_processes)],
                          f"plan and preprocess {target.dataset_name}", cost.preprocessing_s / 2))
    else:
        steps.append(Step("pretraining data", None, f"reusing {plans_file(preprocessed)}"))
    resume = (target.run_folder / CHECKPOINT_LATEST).is_file()
    command = ["nnssl_pretrain", "-d", target.dataset_name, *pretrain_arguments(settings), "--device", config.device,
               "-np", str(config.num_processes), *(["--c"] if resume else [])]
    note = f"{'continue' if resume else 'run'} {settings.method} on {settings.encoder}, {settings.steps} steps"
    steps.append(Step("pretraining", command, note, settings.steps * cost.pretrain_step_s))
    return steps


def read_pretrain_config(run_folder: Path) -> dict[str, Any] | None:
    """A pretraining run's saved ``pretrain_config.json``; None when it is missing or unreadable."""
    try:
        return json.loads((run_folder / PRETRAIN_CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def settings_differences(settings: PretrainSettings, saved: dict[str, Any] | None) -> list[str] | None:
    """``"epochs 5 vs 100"``-style entries where a finished run's ``saved`` config differs from what the budget's
    ``nnssl_pretrain`` command would use (its options, else the command's defaults); None when nothing was saved."""
    if saved is None:
        return None
    wanted = {"epochs": settings.epochs, "iters_per_epoch": settings.iters_per_epoch,
              "batch_size": settings.batch_size, "accumulate": PretrainConfig.accumulate,
              "lr": PretrainConfig.lr if settings.lr is None else settings.lr}
    differences = [f"{key} {saved.get(key)} vs {value}" for key, value in wanted.items() if saved.get(key) != value]
    saved_kwargs = {str(k): str(v) for k, v in (saved.get("method_kwargs") or {}).items()}
    if saved_kwargs != dict(settings.method_kwargs):
        differences.append(f"method_kwargs {saved_kwargs} vs {dict(settings.method_kwargs)}")
    return differences


def pretrain_arguments(settings: PretrainSettings) -> list[str]:
    """The ``nnssl_pretrain`` options of a budget."""
    return ["-m", settings.method, "-e", settings.encoder, "--epochs", str(settings.epochs), "--iters-per-epoch",
            str(settings.iters_per_epoch), "--batch-size", str(settings.batch_size),
            *([] if settings.lr is None else ["--lr", str(settings.lr)]),
            *(["--method-kwargs", *(f"{k}={v}" for k, v in settings.method_kwargs)] if settings.method_kwargs else [])]


def downstream_steps(config: StudyConfig, raw_folder: Path, checkpoint: Path) -> list[Step]:
    """nnU-Net planning/preprocessing of the labeled dataset and the plans matched to ``checkpoint``."""
    dataset_id = nnunet_dataset_id(raw_folder)
    identifiers = [c.identifier for c in list_raw_cases(raw_folder)]
    folder = env_folder(NNUNET_PREPROCESSED) / raw_folder.name
    cost = config.budget.cost
    steps = []
    if (folder / f"{NNUNET_PLANS}.json").is_file() and _complete(folder / f"{NNUNET_PLANS}_{CONFIGURATION}",
                                                                 identifiers):
        steps.append(Step("nnU-Net preprocessing", None, f"reusing {folder / NNUNET_PLANS}.json"))
    else:
        steps.append(Step("nnU-Net preprocessing", ["nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c",
                                                    CONFIGURATION, "-np", str(config.num_processes)],
                          f"plan and preprocess {raw_folder.name}", cost.preprocessing_s / 2))
    if any(t.plans == DEFAULT_PLANS_NAME for t in config.trainers):
        patch = nnunet_patch_size(folder)
        matched = patch is not None and _matched_plans_current(folder, checkpoint, identifiers, patch)
        command = None if matched else ["nnssl_transfer_plans", "-d", dataset_id, "--checkpoint", str(checkpoint),
                                        "-np", str(config.num_processes),
                                        *(["--patch-size", *map(str, patch)] if patch else [])]
        note = f"reusing {folder / DEFAULT_PLANS_NAME}.json" if matched else \
            f"plans of {raw_folder.name} matched to the pretraining, at nnU-Net's patch size " \
            f"{'x'.join(map(str, patch)) if patch else '(known once nnU-Net has planned)'}"
        steps.append(Step("matched plans", command, note, 0.0 if matched else cost.preprocessing_s / 4))
    return steps


def nnunet_patch_size(folder: Path) -> list[int] | None:
    """nnU-Net's 3d_fullres patch size in the raw images' axis order (``nnssl_transfer_plans --patch-size``), so the
    ViTs fine-tune on the same field of view as nnU-Net's CNN; None before nnU-Net has planned."""
    try:
        plans = json.loads((folder / f"{NNUNET_PLANS}.json").read_text())
        patch = [int(v) for v in plans["configurations"][CONFIGURATION]["patch_size"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    transpose = [int(a) for a in plans.get("transpose_forward", range(len(patch)))]
    original = [0] * len(patch)
    for index, axis in enumerate(transpose):  # nnU-Net stores the patch in transposed order
        original[axis] = patch[index]
    return original


def _matched_plans_current(folder: Path, checkpoint: Path, identifiers: list[str], patch: list[int]) -> bool:
    """``nnsslPlans.json`` points at ``checkpoint`` with its current sha256, its patch is nnU-Net's ``patch`` on the
    encoder grid (within one grid step per axis, after ``nnssl_transfer_plans``' cap at the median image shape), and
    its data is complete."""
    plans = folder / f"{DEFAULT_PLANS_NAME}.json"
    if not plans.is_file() or not checkpoint.is_file():
        return False
    try:
        content = json.loads(plans.read_text())
        conf = content["configurations"][CONFIGURATION]
        block = conf[PRETRAINED_KEY]
        transpose = [int(a) for a in content.get("transpose_forward", range(len(patch)))]
        ours = [int(v) for v in conf["patch_size"]]
        median = conf.get("median_image_size_in_voxels")
        multiple = finetune_architecture(block["encoder"]).patch_multiple
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, NnsslError):
        return False
    grid = max(multiple)
    wanted = [patch[a] for a in transpose]
    if median is not None:
        wanted = cap_patch_to_median(wanted, median, [multiple[a] for a in transpose])
    same = Path(block.get("checkpoint", "")).resolve() == checkpoint.resolve() and \
        block.get("sha256") == file_sha256(checkpoint)
    near = all(abs(a - b) < grid for a, b in zip(ours, wanted, strict=True))
    return same and near and _complete(folder / f"{DEFAULT_PLANS_NAME}_{CONFIGURATION}", identifiers)


def pretraining_facts(target: PretrainingTarget) -> dict[str, Any]:
    """What the report says about the pretraining: checkpoint, sha256, its config and its number of images."""
    facts: dict[str, Any] = {"dataset": target.dataset_name, "checkpoint": str(target.checkpoint)}
    if target.checkpoint.is_file():
        facts["sha256"] = file_sha256(target.checkpoint)
    saved = read_pretrain_config(target.run_folder)
    if saved is not None:
        facts["config"] = {k: saved.get(k) for k in ("method", "encoder", "epochs", "iters_per_epoch", "batch_size",
                                                      "lr", "patch_size", "device")}
    raw = env_folder(RAW) / target.dataset_name
    facts["num_images"] = len(list_raw_cases(raw)) if raw.is_dir() else None
    return facts
