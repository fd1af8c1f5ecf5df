"""``nnssl_benchmark``: does pretraining pay off with few labels? One command, on nnU-Net's own machinery.

    nnssl_benchmark -d 501 -pd 500 --labels 2 4 8 all --folds 0 1 2 --budget short [--dry-run]

Pretrains on dataset PD (or reuses its finished pretraining), holds out a third of D's labeled cases (stratified by
tumour size), then for every label count k and repeat ("fold") draws k training cases stratified by tumour size and
fine-tunes SSLViTTrainer, SSLViTTrainer_scratch and nnU-Net's nnUNetTrainer on them with the same epoch/iteration
budget, through ``nnUNetv2_train`` with a one-split ``splits_final.json`` whose ``val`` is the held-out set. Every model
is scored on the same held-out cases (nnU-Net's evaluator: Dice; MONAI: surface Dice at a tolerance in mm, HD95).
Writes ``<output>/report.md``, ``results.json`` and ``label_efficiency.png``. Rerunning reuses finished runs and
continues killed ones. Budgets: tiny (tests), short (CPU, small phantoms), full (GPU; nnU-Net's 1000 epochs).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nnssl.cli.benchmark_budget import BUDGETS, DEFAULT_BUDGET, DEFAULT_TRAINERS, TRAINERS, get_budget, get_trainer
from nnssl.cli.benchmark_commands import NNUNET_WORKER_VARIABLES, Executor, base_environment, run_command
from nnssl.cli.benchmark_metrics import DEFAULT_NSD_TOLERANCE_MM
from nnssl.cli.benchmark_prepare import (
    Step,
    downstream_steps,
    nnunet_patch_size,
    pretraining_facts,
    pretraining_steps,
    resolve_pretraining,
)
from nnssl.cli.benchmark_report import write_report, write_results
from nnssl.cli.benchmark_runs import execute_run
from nnssl.cli.benchmark_study import NNUNET_PREPROCESSED, STUDY_FILE, RunStatus, Study, StudyConfig, StudyRun
from nnssl.cli.benchmark_subsets import heldout_images_seen, label_count_name, parse_label_count
from nnssl.cli.entry import cli_entry
from nnssl.config.plans import write_json_atomic
from nnssl.data.raw_dataset import list_raw_cases
from nnssl.errors import NnsslError
from nnssl.paths import RAW, env_folder, find_dataset

NNUNET_RAW = "nnUNet_raw"
DEFAULT_OUTPUT = Path("benchmark")
DEFAULT_LABELS = ("2", "4", "8", "all")
DEFAULT_FOLDS = (0, 1, 2)
SECONDS_PER_MINUTE = 60
SECONDS_PER_DAY = 86400
SEEN_KEY = "heldout_seen_by_pretraining"
MAX_LISTED_CASES = 8  # --dry-run lists at most this many training cases per run
MAX_CPU_JOBS = 4  # more concurrent CPU runs than this mostly fight over memory bandwidth
THREADS_VARIABLE = "OMP_NUM_THREADS"


def open_study(config: StudyConfig, write: bool) -> tuple[Study, list[Step]]:
    """The study of ``config`` (``study.json`` read or created) and its preparation steps."""
    raw = find_dataset(env_folder(NNUNET_RAW), config.dataset)
    target = resolve_pretraining(config)
    study = Study.open(config, raw, write=write)  # draws or reads the held-out cases
    if SEEN_KEY not in study.state:
        held = set(study.heldout)
        images = {c.identifier: c.files for c in list_raw_cases(raw) if c.identifier in held}
        study.state[SEEN_KEY] = heldout_images_seen(images, env_folder(RAW) / target.dataset_name)
        if write:
            write_json_atomic(study.state, Path(config.output) / STUDY_FILE)
    return study, preparation_steps(config, raw)


def preparation_steps(config: StudyConfig, raw: Path) -> list[Step]:
    """Pretraining data, pretraining, nnU-Net preprocessing, matched plans: each reused or to run (in order)."""
    target = resolve_pretraining(config)
    return pretraining_steps(config, target) + downstream_steps(config, raw, target.checkpoint)


def describe_plan(study: Study, steps: Sequence[Step]) -> str:
    """The ``--dry-run`` text: preparation steps, runs with their status, budget and estimated cost."""
    config, budget = study.config, study.config.budget
    runs = study.runs()
    lines = [f"nnssl_benchmark plan for {study.dataset_name} (output {config.output}, budget {budget.name}: "
             f"{budget.description})",
             f"held-out: {len(study.heldout)} cases ({', '.join(study.heldout)}); training pool {len(study.pool)}",
             f"pretraining saw held-out images: {_seen_text(study.state.get(SEEN_KEY))}", "",
             "preparation:"]
    total = 0.0
    for step in steps:
        action = "reuse" if step.command is None else f"run   `{shlex.join(step.command)}`"
        lines.append(f"  {step.name:<22} {action}  ({step.note}; ~{step.seconds / SECONDS_PER_MINUTE:.1f} min)")
        total += step.seconds
    lines += ["", f"runs ({len(runs)} = {len(config.label_counts)} label counts x {len(config.repeats)} repeats x "
              f"{len(config.trainers)} trainers; equal {budget.equal}"
              + (f", about {budget.compute_s:.0f} s of training each" if budget.compute_s else "") + "):"]
    for trainer in config.trainers:
        schedule = budget.schedule(trainer.name)
        lines.append(f"  {trainer.name:<24} {schedule.variant:<30} {schedule.epochs} epochs x "
                     f"{schedule.iterations_per_epoch} iterations = {schedule.steps} steps")
    patch = nnunet_patch_size(env_folder(NNUNET_PREPROCESSED) / study.dataset_name)
    lines.append(f"  fine-tuning patch: {'x'.join(map(str, patch)) + ' (nnU-Net plan)' if patch else 'not planned yet'}"
                 f"; cost scaled from {'x'.join(map(str, budget.cost.reference_patch))}")
    counts: dict[RunStatus, int] = {}
    run_seconds = 0.0
    for run in runs:
        status = study.status(run)
        counts[status] = counts.get(status, 0) + 1
        seconds = study.estimated_seconds(run, patch)
        run_seconds += seconds
        lines.append(f"  {run.name:<40} {run.variant:<30} -p {run.trainer.plans:<12} k={label_count_name(run.k):<4}"
                     f" {status:<8} ~{seconds / SECONDS_PER_MINUTE:.1f} min  train: {_case_list(run.train_cases)}")
    total += run_seconds / config.jobs  # the preparation runs alone; the runs share the --jobs slots
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    lines += ["", f"status: {summary}",
              f"estimated cost: {total / SECONDS_PER_MINUTE:.0f} min = {total / SECONDS_PER_DAY:.1f} days with "
              f"{config.jobs} concurrent run(s) ({budget.cost.measured})"]
    if budget.cost.device != config.device:
        lines.append(f"note: the {budget.name} budget's cost model is for {budget.cost.device}; this study runs on "
                     f"{config.device}, so expect a very different cost")
    return "\n".join(lines)


def _case_list(cases: Sequence[str]) -> str:
    shown = ", ".join(cases[:MAX_LISTED_CASES])
    return shown + (f" ... ({len(cases)} cases)" if len(cases) > MAX_LISTED_CASES else "")


def _seen_text(seen: list[str] | None) -> str:
    return "unknown" if seen is None else (f"yes ({len(seen)})" if seen else "no")


def study_setup(config: StudyConfig, study: Study, argv: Sequence[str]) -> dict[str, Any]:
    """The report's setup block."""
    budget = config.budget
    target = resolve_pretraining(config)
    return {"command": shlex.join(["nnssl_benchmark", *argv]), "budget_description": budget.description,
            "equal": budget.equal, "compute_s": budget.compute_s,
            "schedules": {t.name: asdict(budget.schedule(t.name)) for t in config.trainers},
            "notes": list(budget.notes),
            "nsd_tolerance_mm": config.nsd_tolerance_mm, "device": config.device, "jobs": config.jobs,
            "pretraining": pretraining_facts(target)}


def run_benchmark(config: StudyConfig, argv: Sequence[str] = (), dry_run: bool = False,
                  execute: Executor = run_command) -> Path | None:
    """Run (or with ``dry_run`` only print) the study; returns ``report.md`` (None for a dry run)."""
    study, steps = open_study(config, write=not dry_run)
    if dry_run:
        print(describe_plan(study, steps))
        return None
    env = base_environment(config.num_processes)
    prepare(study, steps, env, execute)
    results = execute_runs(study, study.runs(), run_environment(env, config.jobs, config.num_processes), execute,
                           config.jobs)
    setup = study_setup(config, study, argv)
    write_results(config.output, study.state, setup, results)
    report = write_report(config.output, study.state, setup, results)
    print(f"nnssl: report {report.resolve()}")
    return report


def run_environment(env: Mapping[str, str], jobs: int, num_processes: int) -> dict[str, str]:
    """``env`` for the fine-tuning runs: unless the user set them, the ``jobs`` concurrent runs share the CPU threads
    and the ``-np`` data-augmentation workers equally (more threads or workers than cores slow every run down:
    torch spin-waits, and two runs with two workers each took 2.5x longer per ViT run than one run alone)."""
    run_env = dict(env)
    if not os.environ.get(THREADS_VARIABLE, "").strip():
        run_env[THREADS_VARIABLE] = str(max(1, usable_cpus() // jobs))
    for variable in NNUNET_WORKER_VARIABLES:
        if not os.environ.get(variable, "").strip():
            run_env[variable] = str(max(1, num_processes // jobs))
    return run_env


def execute_runs(study: Study, runs: Sequence[StudyRun], env: Mapping[str, str], execute: Executor,
                 jobs: int) -> list[dict[str, Any]]:
    """Train and score ``runs``, ``jobs`` at a time; results in the order of ``runs``.

    Runs are independent subprocesses, so threads only wait on them; runs of one subset may link its folder at the
    same time (``prepare_subset`` tolerates that). After a failure the runs already started
    finish (their results are kept for the next invocation), no new run starts, and the first error is raised.
    """
    lock, failed = threading.Lock(), threading.Event()
    state: dict[str, Any] = {"done": 0, "error": None}

    def one(run: StudyRun) -> dict[str, Any] | None:
        if failed.is_set():
            return None  # another run failed: start nothing new
        status = study.status(run)
        prefix = f"nnssl: {run.name} ({run.variant}, {len(run.train_cases)} cases)"
        if status != RunStatus.DONE:
            print(f"{prefix}: {status}, started", flush=True)
        try:
            result = execute_run(study, run, env, execute)
        except BaseException as err:
            with lock:
                state["error"] = state["error"] or err  # the first failure in time is the one reported
            failed.set()
            raise
        with lock:
            state["done"] += 1
            count = state["done"]
        dice = result["metrics"]["mean"]["Dice"]
        took = "" if result.get("wall_s") is None or status == RunStatus.DONE else f" in {result['wall_s']:.0f} s"
        print(f"nnssl: [{count}/{len(runs)}] {run.name}: Dice {'n/a' if dice is None else f'{dice:.3f}'}{took}"
              + (" (reused)" if status == RunStatus.DONE else ""), flush=True)
        return result

    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="nnssl-run")
    try:
        futures = [pool.submit(one, run) for run in runs]
        pool.shutdown(wait=True)
    except BaseException:  # Ctrl-C or a signal in this thread: start nothing new, let the running ones end
        failed.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    if state["error"] is not None:
        raise state["error"]
    return [f.result() for f in futures]


def prepare(study: Study, steps: list[Step], env: dict[str, str], execute: Executor) -> None:
    """Run the pending preparation steps in order, re-planning after each (later steps read what it wrote).

    Raises:
        NnsslError: a step's command succeeded but its output is still incomplete (names the log).
    """
    announced: set[str] = set()
    while True:
        for step in steps:
            if step.command is None and step.name not in announced:
                print(f"nnssl: {step.name}: {step.note}")
                announced.add(step.name)
        step = next((s for s in steps if s.command is not None), None)
        if step is None:
            return
        if step.name in announced:
            raise NnsslError(f"{step.name}: `{shlex.join(step.command)}` finished but its output is incomplete; see "
                             f"{study.log_file(_log_name(step))}")
        print(f"nnssl: {step.name}: {step.note} ...", flush=True)
        seconds = execute(step.command, env, study.log_file(_log_name(step)))
        print(f"nnssl: {step.name}: done in {seconds:.0f} s")
        announced.add(step.name)
        steps = preparation_steps(study.config, study.raw_folder)


def _log_name(step: Step) -> str:
    return step.name.replace(" ", "_")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnssl_benchmark", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", dest="dataset", required=True, help="labeled nnU-Net dataset (id or DatasetXXX_Name) in "
                   "$nnUNet_raw")
    p.add_argument("-pd", dest="pretrain_dataset", required=True, help="pretraining dataset (nnssl)")
    p.add_argument("--labels", nargs="+", default=list(DEFAULT_LABELS), metavar="K",
                   help="label counts: numbers of labeled training cases, or 'all' (default %(default)s)")
    p.add_argument("--folds", nargs="+", type=int, default=list(DEFAULT_FOLDS), metavar="R",
                   help="repeats: each draws its own k cases (default %(default)s)")
    p.add_argument("--budget", default=DEFAULT_BUDGET, help=f"one of {', '.join(BUDGETS)} (default %(default)s): "
                   + "; ".join(f"{b.name}: {b.description}" for b in BUDGETS.values()))
    p.add_argument("--trainers", nargs="+", default=list(DEFAULT_TRAINERS), metavar="T",
                   help=f"compared trainers, from {', '.join(TRAINERS)} (default: all)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="study folder (default %(default)s)")
    p.add_argument("--holdout", type=int, default=None, metavar="N",
                   help="held-out evaluation cases (default: a third, 2..50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out set and subsets (default 0)")
    p.add_argument("--nsd-tolerance", type=float, default=DEFAULT_NSD_TOLERANCE_MM, metavar="MM",
                   help="surface Dice tolerance in mm (default %(default)s)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    p.add_argument("-np", dest="num_processes", type=int, default=2,
                   help="data-augmentation/preprocessing worker processes per command (default 2)")
    p.add_argument("--jobs", type=int, default=None, metavar="J",
                   help=f"fine-tuning runs at a time (default: one per CPU core up to {MAX_CPU_JOBS} on cpu, 1 on "
                        f"cuda); the runs share the cores ({THREADS_VARIABLE}) and the -np workers unless you set "
                        "them")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its estimated cost, run nothing")
    return p


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    """Validate the command line into a :class:`StudyConfig`."""
    counts = tuple(dict.fromkeys(parse_label_count(v) for v in args.labels))
    repeats = tuple(dict.fromkeys(args.folds))
    if any(r < 0 for r in repeats):
        raise NnsslError(f"--folds values must be >= 0, got {list(repeats)}")
    if args.nsd_tolerance <= 0:
        raise NnsslError(f"--nsd-tolerance must be positive (mm), got {args.nsd_tolerance}")
    trainers = tuple(dict.fromkeys(get_trainer(t) for t in args.trainers))
    device = args.device or _default_device()
    jobs = args.jobs if args.jobs is not None else default_jobs(device)
    if jobs < 1:
        raise NnsslError(f"--jobs must be at least 1, got {jobs}")
    return StudyConfig(dataset=args.dataset, pretrain_dataset=args.pretrain_dataset, label_counts=counts,
                       repeats=repeats, budget=get_budget(args.budget), trainers=trainers, output=args.output,
                       seed=args.seed, num_heldout=args.holdout, nsd_tolerance_mm=args.nsd_tolerance, device=device,
                       num_processes=args.num_processes, jobs=jobs)


def default_jobs(device: str) -> int:
    """Concurrent runs by default: one per usable CPU (capped) on cpu; one on cuda (a run fills the GPU)."""
    return 1 if device == "cuda" else max(1, min(MAX_CPU_JOBS, usable_cpus()))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. ``taskset``/cpusets), else all of the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    run_benchmark(config_from_args(args), argv, dry_run=args.dry_run)
    return 0

