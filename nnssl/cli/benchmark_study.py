"""The study's fixed facts (``study.json``: held-out cases, training pool, tumour sizes) and its planned runs.

``study.json`` is written once per output folder. A rerun (a killed study, or more ``--labels``/``--folds``) reads it
back, so the held-out cases never change; subsets are pure functions of the pool, k, the repeat and the seed.

Folder layout under ``--output``::

    study.json                       held-out cases, pool, tumour voxels, pretraining facts
    subsets/k004_r0/                 one private nnU-Net world per (k, repeat):
        nnUNet_preprocessed/DatasetXXX_Name/   links to the real preprocessed dataset + our splits_final.json
        nnUNet_results/DatasetXXX_Name/<trainer>__<plans>__3d_fullres/fold_0/
    runs/k004_r0__SSLViTTrainer.json  one result file per finished run (written last, atomically)
    logs/                            one log per command
    results.json, report.md, label_efficiency.png
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnssl.cli.benchmark_budget import StudyBudget, StudyTrainer
from nnssl.cli.benchmark_metrics import DEFAULT_NSD_TOLERANCE_MM
from nnssl.cli.benchmark_subsets import (
    LabelCount,
    LabeledCase,
    default_heldout_count,
    draw_heldout,
    draw_subset,
    list_labeled_cases,
    subset_folder_name,
    training_pool,
)
from nnssl.config.enums import StrEnum
from nnssl.config.plans import write_json_atomic
from nnssl.data.raw_dataset import list_raw_cases
from nnssl.errors import NnsslError

STUDY_FILE = "study.json"
STUDY_VERSION = 1
CONFIGURATION = "3d_fullres"
FOLD = 0  # every subset has its own splits_final.json with one split
RUNS_FOLDER, SUBSETS_FOLDER, LOGS_FOLDER = "runs", "subsets", "logs"
NNUNET_PREPROCESSED, NNUNET_RESULTS = "nnUNet_preprocessed", "nnUNet_results"
CHECKPOINT_FINAL, CHECKPOINT_LATEST = "checkpoint_final.pth", "checkpoint_latest.pth"
VALIDATION_SUMMARY = Path("validation") / "summary.json"
FIXED_KEYS = ("dataset", "budget", "seed", "num_heldout")  # a rerun into the same output must agree on these


@dataclass(frozen=True)
class StudyConfig:
    """What the user asked for (the command line)."""

    dataset: str
    pretrain_dataset: str
    label_counts: tuple[LabelCount, ...]
    repeats: tuple[int, ...]
    budget: StudyBudget
    trainers: tuple[StudyTrainer, ...]
    output: Path
    seed: int = 0
    num_heldout: int | None = None
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM
    device: str = "cpu"
    num_processes: int = 2
    jobs: int = 1


class RunStatus(StrEnum):
    """Where a run stands: ``done`` (result file), ``trained`` (only metrics missing), ``partial`` (a checkpoint or
    folder to continue from), ``todo``."""

    DONE = "done"
    TRAINED = "trained"
    PARTIAL = "partial"
    TODO = "todo"


@dataclass(frozen=True)
class StudyRun:
    """One fine-tuning run: a trainer on the k cases of one repeat."""

    trainer: StudyTrainer
    variant: str
    k: LabelCount
    repeat: int
    train_cases: tuple[str, ...]

    @property
    def subset(self) -> str:
        return subset_folder_name(self.k, self.repeat)

    @property
    def name(self) -> str:
        return f"{self.subset}__{self.trainer.name}"


class Study:
    """The held-out set, the pool and the runs of one output folder.

    Args:
        config: the command line.
        raw_folder: the labeled nnU-Net raw dataset.
        state: the ``study.json`` content.
    """

    def __init__(self, config: StudyConfig, raw_folder: Path, state: dict[str, Any]) -> None:
        self.config = config
        self.raw_folder = raw_folder
        self.state = state
        self.dataset_name: str = state["dataset"]
        sizes = state["tumour_voxels"]
        self.heldout: list[str] = list(state["heldout"])
        self.pool = [LabeledCase(i, (), Path(), int(sizes[i])) for i in state["pool"]]

    @classmethod
    def open(cls, config: StudyConfig, raw_folder: Path, extra_state: dict[str, Any] | None = None,
             write: bool = True) -> Study:
        """Read ``study.json`` from the output folder, or draw the held-out set and write it (unless ``write`` is
        False, as in ``--dry-run``).

        Raises:
            NnsslError: the folder holds a study of another dataset/budget/seed/held-out count, or the raw dataset's
                cases changed since.
        """
        path = Path(config.output) / STUDY_FILE
        if path.is_file():
            state = _read_state(path)
            wanted = {"dataset": raw_folder.name, "budget": config.budget.name, "seed": config.seed,
                      "num_heldout": config.num_heldout or state["num_heldout"]}
            clashes = [f"{k} {state.get(k)!r} (asked: {wanted[k]!r})" for k in FIXED_KEYS if state.get(k) != wanted[k]]
            if clashes:
                raise NnsslError(f"{path} belongs to another study: {', '.join(clashes)}; use another --output or "
                                 "delete that folder")
            current = sorted(c.identifier for c in list_raw_cases(raw_folder))
            if current != sorted([*state["heldout"], *state["pool"]]):
                raise NnsslError(f"the cases of {raw_folder} changed since {path} was written; use another --output")
            return cls(config, raw_folder, state)
        cases = list_labeled_cases(raw_folder)
        num_heldout = config.num_heldout or default_heldout_count(len(cases))
        heldout = draw_heldout(cases, num_heldout, config.seed)
        state = {"version": STUDY_VERSION, "dataset": raw_folder.name, "budget": config.budget.name,
                 "seed": config.seed, "num_heldout": num_heldout, "heldout": heldout,
                 "pool": [c.identifier for c in training_pool(cases, heldout)],
                 "tumour_voxels": {c.identifier: c.tumour_voxels for c in cases}, **(extra_state or {})}
        if write:
            write_json_atomic(state, path)
        return cls(config, raw_folder, state)

    # ---------------------------------------------------------------------------------------------------- runs
    def runs(self) -> list[StudyRun]:
        """Every (k, repeat, trainer) run of the command line, in the order they execute."""
        runs = []
        for k in self.config.label_counts:
            for repeat in self.config.repeats:
                cases = tuple(draw_subset(self.pool, k, repeat, self.config.seed))
                for trainer in self.config.trainers:
                    runs.append(StudyRun(trainer, self.config.budget.variant(trainer.name), k, repeat, cases))
        return runs

    def subset_root(self, subset: str) -> Path:
        return Path(self.config.output) / SUBSETS_FOLDER / subset

    def model_folder(self, run: StudyRun) -> Path:
        """nnU-Net's ``fold_0`` folder of the run."""
        return (self.subset_root(run.subset) / NNUNET_RESULTS / self.dataset_name
                / f"{run.variant}__{run.trainer.plans}__{CONFIGURATION}" / f"fold_{FOLD}")

    def result_file(self, run: StudyRun) -> Path:
        return Path(self.config.output) / RUNS_FOLDER / f"{run.name}.json"

    def log_file(self, name: str) -> Path:
        return Path(self.config.output) / LOGS_FOLDER / f"{name}.log"

    def status(self, run: StudyRun) -> RunStatus:
        """:class:`RunStatus` of ``run`` from the files on disk."""
        if self.result_file(run).is_file():
            return RunStatus.DONE
        folder = self.model_folder(run)
        if (folder / CHECKPOINT_FINAL).is_file() and (folder / VALIDATION_SUMMARY).is_file():
            return RunStatus.TRAINED
        if folder.is_dir():
            return RunStatus.PARTIAL
        return RunStatus.TODO

    def estimated_seconds(self, run: StudyRun, patch: Sequence[int] | None = None) -> float:
        """Wall seconds still needed for ``run`` at fine-tuning ``patch`` (0 when done; a partial run counts in
        full)."""
        status = self.status(run)
        if status in (RunStatus.DONE, RunStatus.TRAINED):
            return 0.0
        return self.config.budget.run_seconds(run.trainer, len(self.heldout), patch)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise NnsslError(f"{path} is unreadable ({err}); delete it to start the study anew") from None
    if state.get("version") != STUDY_VERSION:
        raise NnsslError(f"{path} has version {state.get('version')}, this nnssl writes {STUDY_VERSION}; use "
                         "another --output")
    return state
