"""``nnssl_demo``: the embedded default job, from CT phantoms to a segmentation report, in ``demo_output/``.

Steps (each a console command in a subprocess, exactly as a user types it; its output goes to ``logs/``):

    nnssl_make_phantoms --unlabeled N -d 500 / --labeled M --test K -d 501     # procedural thorax CT
    nnssl_plan_and_preprocess -d 500                                         # pretraining data
    nnssl_pretrain -d 500 -m simmim -e vit_tiny --method-kwargs head=skip    # short SimMIM pretraining
    nnUNetv2_plan_and_preprocess -d 501 -c 3d_fullres --no_pp                # nnU-Net plans, as usual
    nnssl_transfer_plans -d 501 -pd 500                                      # matched plans + preprocessing
    nnUNetv2_train 501 3d_fullres 0 -tr SSLViTTrainer_short / _scratch_short -p nnsslPlans
    nnUNetv2_predict ... ; nnUNetv2_evaluate_folder ...                      # held-out test cases
    -> report.md (Dice table, loss curves, reconstruction previews, segmentation overlays)

A rerun reuses every step whose final artefact exists (checkpoint_final.pth, summary.json, predictions...). All data
lives in the output folder: the demo sets the nnssl_* / nnUNet_* folder variables of its commands to
``<output>/<variable>`` and never touches the folders of your own environment. The budget is small (CPU, phantoms, one
run per trainer): the numbers show that the pipeline runs and that the ViT segments; whether pretraining helps needs
repeats (``docs/benchmark_phantoms``).
"""
from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from nnssl.cli.demo_report import TrainerRun, write_report
from nnssl.cli.demo_steps import STEPS_FILE, Step, StepRunner, subprocess_environment
from nnssl.cli.entry import cli_entry
from nnssl.config.enums import StrEnum
from nnssl.config.plans import DEFAULT_PLANS_NAME
from nnssl.config.pretrain import run_folder_name
from nnssl.data.dataset import complete_identifiers, data_folder, plans_file
from nnssl.data.raw_dataset import DATASET_JSON
from nnssl.errors import NnsslError
from nnssl.paths import PREPROCESSED, RAW, RESULTS, dataset_name
from nnssl.training.checkpoint import CHECKPOINT_FINAL, CHECKPOINT_LATEST

DEFAULT_OUTPUT = Path("demo_output")
FOLDER_VARIABLES = (RAW, PREPROCESSED, RESULTS, "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
UNLABELED_ID, UNLABELED_NAME = 500, "PhantomCTUnlabeled"
LABELED_ID, LABELED_NAME = 501, "PhantomLungTumour"
NNUNET_CONFIGURATION = "3d_fullres"
TRANSFER_PLANS = "nnsslPlans"  # nnssl_transfer_plans' default plans name for the downstream dataset
FOLD = "0"
DEFAULT_SEED = 0
DEFAULT_NUM_PROCESSES = 2  # 2 cores; nnU-Net's own defaults (8 processes) overload small machines
# torch's OpenMP threads spin-wait when other processes hold the cores: on a shared 2-core machine 50 MAE steps took
# 267 s with torch's default 2 threads and 7 s with 1 (one busy process beside it). The demo's CPU commands get 1 thread
# each unless OMP_NUM_THREADS is set.
CPU_THREADS_PER_PROCESS = "1"
IMAGE_SUFFIX, NIFTI = "_0000.nii.gz", ".nii.gz"
STEP_NAMES = ("phantoms_unlabeled", "phantoms_labeled", "nnssl_preprocess", "pretrain", "nnunet_plan",
              "transfer_plans", "train_pretrained", "train_scratch", "predict_pretrained", "predict_scratch",
              "evaluate_pretrained", "evaluate_scratch", "report")


class DemoDevice(StrEnum):
    """Where pretraining, training and prediction run; ``auto`` picks CUDA when torch sees a GPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


@dataclass(frozen=True)
class DemoBudget:
    """Data sizes and training budget of one demo variant (the fine-tuning budget is the trainer class's)."""

    unlabeled_cases: int
    labeled_cases: int  # fold 0 of nnU-Net's 5-fold split needs at least 5
    test_cases: int
    shape: tuple[int, int, int]  # voxels per phantom (Z, Y, X)
    spacing_mm: tuple[float, float]  # slice, in-plane
    tumour_mm: tuple[float, float]  # range of tumour diameters
    patch_size: tuple[int, int, int]  # pretraining = fine-tuning patch (Z, Y, X), multiples of 32
    method: str
    method_kwargs: tuple[str, ...]  # nnssl_pretrain --method-kwargs
    encoder: str
    pretrain_epochs: int
    pretrain_iterations: int
    pretrain_batch_size: int
    pretrain_lr: float
    pretrain_warmup_epochs: int
    trainer: str  # pretrained fine-tuning
    scratch_trainer: str  # the same architecture and schedule from random init


BUDGETS: dict[str, DemoBudget] = {
    # The study phantoms (docs/benchmark_phantoms): 800 SimMIM steps that also pretrain the fine-tuning decoder and
    # 2 x 500 fine-tuning iterations of the vit_tiny PrimusSkip (nnssl_trainers.short.SHORT). Measured only on a busy
    # 2-core machine (two other trainings beside it): pretraining 348 s, fine-tunings 351 s and 212 s, 19 min in all.
    "demo": DemoBudget(unlabeled_cases=24, labeled_cases=10, test_cases=4, shape=(32, 48, 48), spacing_mm=(4.0, 3.0),
                       tumour_mm=(15.0, 40.0), patch_size=(32, 32, 32), method="simmim", method_kwargs=("head=skip",),
                       encoder="vit_tiny", pretrain_epochs=16, pretrain_iterations=50, pretrain_batch_size=2,
                       pretrain_lr=1e-3, pretrain_warmup_epochs=1,
                       trainer="SSLViTTrainer_short", scratch_trainer="SSLViTTrainer_scratch_short"),
    # Every step once with the fewest cases and steps: the tests' smoke run (a few minutes, mostly process start-up).
    "tiny": DemoBudget(unlabeled_cases=4, labeled_cases=5, test_cases=1, shape=(40, 64, 64), spacing_mm=(2.5, 1.5),
                       tumour_mm=(15.0, 40.0), patch_size=(32, 32, 32), method="simmim",
                       method_kwargs=("head=skip",), encoder="vit_tiny", pretrain_epochs=1,
                       pretrain_iterations=2, pretrain_batch_size=1, pretrain_lr=1e-3, pretrain_warmup_epochs=0,
                       trainer="SSLViTTrainer_tiny", scratch_trainer="SSLViTTrainer_scratch_tiny"),
}
DEFAULT_BUDGET = "demo"


@dataclass(frozen=True)
class DemoLayout:
    """Where everything of one demo run lives inside its output folder."""

    output: Path
    budget: DemoBudget

    @property
    def folders(self) -> dict[str, Path]:
        return {variable: self.output / variable for variable in FOLDER_VARIABLES}

    @property
    def unlabeled_raw(self) -> Path:
        return self.output / RAW / dataset_name(UNLABELED_ID, UNLABELED_NAME)

    @property
    def labeled_raw(self) -> Path:
        return self.output / "nnUNet_raw" / dataset_name(LABELED_ID, LABELED_NAME)

    @property
    def pretraining_data(self) -> Path:
        return self.output / PREPROCESSED / dataset_name(UNLABELED_ID, UNLABELED_NAME)

    @property
    def pretraining_run(self) -> Path:
        return (self.output / RESULTS / dataset_name(UNLABELED_ID, UNLABELED_NAME)
                / run_folder_name(self.budget.method, self.budget.encoder, DEFAULT_PLANS_NAME))

    @property
    def nnunet_data(self) -> Path:
        return self.output / "nnUNet_preprocessed" / dataset_name(LABELED_ID, LABELED_NAME)

    def model_fold(self, trainer: str) -> Path:
        return (self.output / "nnUNet_results" / dataset_name(LABELED_ID, LABELED_NAME)
                / f"{trainer}__{TRANSFER_PLANS}__{NNUNET_CONFIGURATION}" / f"fold_{FOLD}")

    def predictions(self, trainer: str) -> Path:
        return self.output / "predictions" / trainer

    def test_cases(self) -> list[str]:
        return sorted(p.name[: -len(IMAGE_SUFFIX)] for p in (self.labeled_raw / "imagesTs").glob(f"*{IMAGE_SUFFIX}"))


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is an error."""
    if device == DemoDevice.AUTO:
        return str(DemoDevice.CUDA) if torch.cuda.is_available() else str(DemoDevice.CPU)
    if device == DemoDevice.CUDA and not torch.cuda.is_available():
        raise NnsslError("--device cuda: torch sees no CUDA device here; use --device cpu (or auto)")
    return str(device)


def _phantom_args(budget: DemoBudget, seed: int, num_processes: int) -> list[str]:
    return ["--seed", str(seed), "--shape", *map(str, budget.shape), "--spacing", *map(str, budget.spacing_mm),
            "--tumour-mm", *map(str, budget.tumour_mm), "-np", str(num_processes)]


def _has_all_cases(folder: Path, count: int) -> bool:
    return len(complete_identifiers(folder)) >= count


def _replace_folder(source: Path, target: Path) -> None:
    """Move a finished output folder into place (the target only ever holds complete outputs)."""
    if target.exists():
        shutil.rmtree(target)
    source.replace(target)


def _predictions_done(layout: DemoLayout, trainer: str) -> bool:
    folder, checkpoint = layout.predictions(trainer), layout.model_fold(trainer) / CHECKPOINT_FINAL
    files = [folder / f"{case}{NIFTI}" for case in layout.test_cases()]
    return (bool(files) and checkpoint.is_file() and all(f.is_file() for f in files)
            and min(f.stat().st_mtime for f in files) >= checkpoint.stat().st_mtime)  # not from an older model


def pretraining_steps(layout: DemoLayout, device: str, seed: int, num_processes: int) -> list[Step]:
    """Phantoms, nnssl planning/preprocessing and pretraining."""
    b, raw500 = layout.budget, layout.unlabeled_raw
    run = layout.pretraining_run
    pretrain = ["nnssl_pretrain", "-d", str(UNLABELED_ID), "-m", b.method, "-e", b.encoder, "--device", device,
                "--epochs", str(b.pretrain_epochs), "--iters-per-epoch", str(b.pretrain_iterations),
                "--batch-size", str(b.pretrain_batch_size), "--lr", str(b.pretrain_lr),
                "--warmup-epochs", str(b.pretrain_warmup_epochs), "--preview-every", "1", "--seed", str(seed),
                "-np", str(num_processes)]
    if b.method_kwargs:
        pretrain += ["--method-kwargs", *b.method_kwargs]
    if (run / CHECKPOINT_LATEST).is_file():
        pretrain.append("--c")  # an interrupted run continues from its last finished epoch
    return [
        Step("phantoms_unlabeled", f"{b.unlabeled_cases} unlabeled thorax CT phantoms for pretraining",
             ["nnssl_make_phantoms", "--unlabeled", str(b.unlabeled_cases), "-d", str(UNLABELED_ID),
              *_phantom_args(b, seed, num_processes)], raw500 / DATASET_JSON),
        Step("phantoms_labeled", f"{b.labeled_cases} labeled phantoms (lung tumours) + {b.test_cases} held out",
             ["nnssl_make_phantoms", "--labeled", str(b.labeled_cases), "--test", str(b.test_cases), "-d",
              str(LABELED_ID), *_phantom_args(b, seed, num_processes)], layout.labeled_raw / DATASET_JSON),
        Step("nnssl_preprocess", "fingerprint, plan and preprocess the unlabeled phantoms",
             ["nnssl_plan_and_preprocess", "-d", str(UNLABELED_ID), "-np", str(num_processes), "--verify",
              "--patch-size", *map(str, b.patch_size)], data_folder(layout.pretraining_data),
             is_done=lambda: plans_file(layout.pretraining_data).is_file() and _has_all_cases(
                 data_folder(layout.pretraining_data), b.unlabeled_cases)),
        Step("pretrain", f"{b.method} pretraining of {b.encoder}, {b.pretrain_epochs * b.pretrain_iterations} steps",
             pretrain, run / CHECKPOINT_FINAL),
    ]


def finetuning_steps(layout: DemoLayout, device: str, num_processes: int) -> list[Step]:
    """nnU-Net planning, transfer, training of both trainers, prediction and evaluation."""
    b, np_ = layout.budget, str(num_processes)
    # Only training and prediction get data-augmentation workers (nnUNet_n_proc_DA=0 crashes nnU-Net's planner).
    no_da, with_da = {"nnUNet_n_proc_DA": None}, {"nnUNet_n_proc_DA": np_}
    steps = [
        # --no_pp: the demo trains on the matched nnsslPlans that nnssl_transfer_plans preprocesses.
        Step("nnunet_plan", "nnU-Net fingerprint and plans for the labeled phantoms",
             ["nnUNetv2_plan_and_preprocess", "-d", str(LABELED_ID), "-c", NNUNET_CONFIGURATION, "-np", np_,
              "--no_pp"], layout.nnunet_data / "nnUNetPlans.json", env=no_da),
        Step("transfer_plans", "nnU-Net plans matched to the pretraining, then preprocessing",
             ["nnssl_transfer_plans", "-d", str(LABELED_ID), "-pd", str(UNLABELED_ID), "-m", b.method, "-e",
              b.encoder, "-np", np_], layout.nnunet_data / f"{TRANSFER_PLANS}.json", env=no_da,
             is_done=lambda: (layout.nnunet_data / f"{TRANSFER_PLANS}.json").is_file() and _has_all_cases(
                 layout.nnunet_data / f"{TRANSFER_PLANS}_{NNUNET_CONFIGURATION}", b.labeled_cases)),
    ]
    roles = (("pretrained", b.trainer), ("scratch", b.scratch_trainer))
    for role, trainer in roles:
        fold = layout.model_fold(trainer)
        command = ["nnUNetv2_train", str(LABELED_ID), NNUNET_CONFIGURATION, FOLD, "-tr", trainer, "-p",
                   TRANSFER_PLANS, "-device", device]
        if (fold / CHECKPOINT_FINAL).is_file():
            command.append("--val")  # trained; only nnU-Net's final validation is missing
        elif (fold / CHECKPOINT_LATEST).is_file():
            command.append("--c")
        steps.append(Step(f"train_{role}", f"fine-tune {trainer} ({role}) on fold {FOLD}", command,
                          fold / "validation" / "summary.json", env=with_da,
                          is_done=lambda f=fold: (f / CHECKPOINT_FINAL).is_file()
                          and (f / "validation" / "summary.json").is_file()))
    for role, trainer in roles:
        final = layout.predictions(trainer)
        partial = final.with_name(f"{final.name}.partial")
        steps.append(Step(
            f"predict_{role}", f"predict the {b.test_cases} held-out cases with {trainer}",
            ["nnUNetv2_predict", "-i", str(layout.labeled_raw / "imagesTs"), "-o", str(partial), "-d",
             str(LABELED_ID), "-c", NNUNET_CONFIGURATION, "-tr", trainer, "-p", TRANSFER_PLANS, "-f", FOLD,
             "-device", device, "-npp", np_, "-nps", np_], final, env=with_da,
            is_done=lambda t=trainer: _predictions_done(layout, t),
            prepare=lambda p=partial: shutil.rmtree(p, ignore_errors=True),
            on_success=lambda p=partial, f=final: _replace_folder(p, f)))
    for role, trainer in roles:
        pred = layout.predictions(trainer)
        steps.append(Step(
            f"evaluate_{role}", f"Dice of {trainer} on the held-out cases (nnU-Net's evaluator)",
            ["nnUNetv2_evaluate_folder", str(layout.labeled_raw / "labelsTs"), str(pred), "-djfile",
             str(pred / "dataset.json"), "-pfile", str(pred / "plans.json"), "-np", np_], pred / "summary.json",
            env=no_da))
    return steps


def _run_until(runner: StepRunner, steps: Sequence[Step], until: str | None) -> bool:
    """Run ``steps`` in order; True if ``until`` names one of them (the demo stops after it)."""
    for step in steps:
        runner.run(step)
        if step.name == until:
            return True
    return False


def prepare_output(output: Path, fresh: bool) -> Path:
    """The absolute output folder; ``fresh`` deletes a previous demo output there first.

    Raises:
        NnsslError: ``fresh`` on a non-empty folder that was not written by the demo.
    """
    output = Path(output).expanduser().resolve()
    if fresh and output.exists():
        if not output.is_dir() or (any(output.iterdir()) and not (output / STEPS_FILE).is_file()):
            raise NnsslError(f"--fresh would delete {output}, which does not look like a demo output (no "
                             f"{STEPS_FILE}); delete it yourself or pick another --output")
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    return output


def run_demo(output: Path = DEFAULT_OUTPUT, device: str = DemoDevice.AUTO, fresh: bool = False,
             budget_name: str = DEFAULT_BUDGET, num_processes: int = DEFAULT_NUM_PROCESSES, seed: int = DEFAULT_SEED,
             until: str | None = None, verbose: bool = False) -> Path | None:
    """Run (or resume) the demo; returns the report path, or None when stopped early by ``until``.

    Raises:
        NnsslError: bad options, a step that fails (naming its log), or an output folder of another budget.
    """
    if num_processes < 1:
        raise NnsslError(f"-np must be at least 1, got {num_processes} (nnU-Net crashes with 0 workers)")
    budget = BUDGETS[budget_name]
    device = resolve_device(device)
    output = prepare_output(output, fresh)
    layout = DemoLayout(output, budget)
    for folder in layout.folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    env = subprocess_environment(layout.folders)
    env.setdefault("nnUNet_def_n_proc", str(num_processes))  # nnU-Net's export/evaluation pools
    env.setdefault("nnUNet_compile", "false")  # compiling costs more than it saves on a budget this short
    if device == DemoDevice.CPU:
        env.setdefault("OMP_NUM_THREADS", CPU_THREADS_PER_PROCESS)
    runner = StepRunner(output, env, total=len(STEP_NAMES), echo=verbose)
    for option, value in (("budget", budget_name), ("seed", seed)):  # reusing steps of another run would mix them
        used = runner.state.get(option)
        if used not in (None, value) and runner.state["steps"]:
            raise NnsslError(f"{output} holds a demo run with --{option} {used}; rerun with --{option} {used}, add "
                             "--fresh or pick another --output")
    runner.set_meta(budget=budget_name, device=device, seed=seed)
    start = time.perf_counter()
    # The fine-tuning commands are built after pretraining has run: they depend on what it left behind.
    if (_run_until(runner, pretraining_steps(layout, device, seed, num_processes), until)
            or _run_until(runner, finetuning_steps(layout, device, num_processes), until)):
        return None
    print(f"\n[demo {len(STEP_NAMES)}/{len(STEP_NAMES)}] report", flush=True)
    runs = [TrainerRun("pretrained", budget.trainer, layout.model_fold(budget.trainer),
                       layout.predictions(budget.trainer)),
            TrainerRun("scratch", budget.scratch_trainer, layout.model_fold(budget.scratch_trainer),
                       layout.predictions(budget.scratch_trainer))]
    report = write_report(output, runner.records(), layout.pretraining_run, runs, layout.labeled_raw,
                          layout.test_cases(), describe_budget(budget_name, budget, device))
    print_summary(runner, time.perf_counter() - start, report)
    return report


def describe_budget(name: str, budget: DemoBudget, device: str) -> dict[str, str]:
    """Human-readable facts of the run for the report."""
    return {
        "budget": f"`--budget {name}` on {device}",
        "data": f"{budget.unlabeled_cases} unlabeled + {budget.labeled_cases} labeled training + "
                f"{budget.test_cases} held-out test phantoms, {'x'.join(map(str, budget.shape))} voxels at "
                f"{budget.spacing_mm[0]} x {budget.spacing_mm[1]} mm (slice x in-plane)",
        "pretraining": f"{budget.method} on {budget.encoder}, patch {'x'.join(map(str, budget.patch_size))}, "
                       f"{budget.pretrain_epochs} epochs x {budget.pretrain_iterations} steps x batch "
                       f"{budget.pretrain_batch_size}, peak lr {budget.pretrain_lr:g}",
        "fine-tuning": f"{budget.trainer} vs {budget.scratch_trainer} (same architecture and schedule), "
                       f"nnU-Net fold {FOLD}, plans {TRANSFER_PLANS}",
    }


def print_summary(runner: StepRunner, seconds: float, report: Path) -> None:
    print("\nnnssl demo finished. Step times:")
    for record in runner.records():
        took = "-" if record.seconds is None else f"{record.seconds:7.1f} s"
        print(f"  {record.name:<20} {took:>10}{'  (reused)' if record.reused else ''}")
    print(f"  this run: {seconds:.1f} s\nreport: {report}")


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nnssl_demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT,
                        help="folder for everything the demo writes (default %(default)s)")
    parser.add_argument("--device", choices=[str(d) for d in DemoDevice], default=str(DemoDevice.AUTO),
                        help="where training and prediction run (default %(default)s: cuda if available)")
    parser.add_argument("--fresh", action="store_true", help="delete the previous demo output and start over")
    parser.add_argument("-np", "--num-processes", type=int, default=DEFAULT_NUM_PROCESSES,
                        help="worker processes of every step (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="phantom and pretraining seed")
    parser.add_argument("-v", "--verbose", action="store_true", help="also show each command's output")
    advanced = parser.add_argument_group("advanced")
    advanced.add_argument("--budget", choices=list(BUDGETS), default=DEFAULT_BUDGET,
                          help="data and training budget (default %(default)s; tiny: a smoke run for tests)")
    advanced.add_argument("--until", choices=STEP_NAMES, metavar="STEP",
                          help=f"stop after this step, one of: {', '.join(STEP_NAMES)}")
    args = parser.parse_args(argv)
    run_demo(args.output, args.device, args.fresh, args.budget, args.num_processes, args.seed, args.until,
             args.verbose)
    return 0
