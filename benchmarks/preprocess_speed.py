"""Time ``nnssl_plan_and_preprocess`` against ``nnUNetv2_plan_and_preprocess -c 3d_fullres`` on the same images.

Both commands run in this one call, as subprocesses with the same worker count, on the same image files: nnU-Net on
a labeled raw dataset (it needs labels), nnssl on the nnssl raw dataset that ``nnssl_convert --from-nnunet`` links to
the same images. Data set-up is not timed. Prints a table and the ratio (goal: nnssl <= 1.0x nnU-Net) and writes
``benchmark_output/preprocess_speed.json``.

    .venv/bin/python benchmarks/preprocess_speed.py                  # 20 phantoms generated into a temp folder
    .venv/bin/python benchmarks/preprocess_speed.py --real           # ../shared/data/Dataset510_SarcomaCT (36 CT)

Wall time depends on what else runs on the machine; the CPU time (user + system of the command and its workers) is
reported too and is the steadier number on a shared machine.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from nnssl.config.plans import write_json_atomic
from nnssl.data.dataset import complete_identifiers, data_folder

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Real CT: $NNSSL_SHARED_DATA or ../shared/data beside the checkout (as the tests read it).
REAL_DATASET = Path(os.environ.get("NNSSL_SHARED_DATA", REPO.parent / "shared" / "data")) / "Dataset510_SarcomaCT"
DEFAULT_OUTPUT = REPO / "benchmark_output" / "preprocess_speed.json"
PHANTOM_ID, PHANTOM_NAME, PHANTOM_SSL_ID = 951, "PhantomBench", 952
REAL_ID, REAL_SSL_ID, REAL_SSL_NAME = 510, 520, "Sarcoma"
DEFAULT_PHANTOMS = 20
DEFAULT_WORKERS = 2
GOAL_RATIO = 1.0
# nnunetv2 2.8.1 crashes with nnUNet_n_proc_DA=0; any positive value works for plan_and_preprocess.
NNUNET_N_PROC_DA = "2"
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


@dataclass
class Timing:
    """One timed command."""

    tool: str
    command: str
    wall_s: float
    cpu_s: float
    cases: int


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    for variable in ("nnssl_raw", "nnssl_preprocessed", "nnssl_results", "nnUNet_raw", "nnUNet_preprocessed",
                     "nnUNet_results"):
        env[variable] = str(root / variable)
        (root / variable).mkdir(parents=True, exist_ok=True)
    env["nnUNet_n_proc_DA"] = NNUNET_N_PROC_DA
    return env


def _become_subreaper() -> None:
    """Adopt orphaned descendants (a fork server outlives its parent by a moment) so their CPU time is counted."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _reap_descendants() -> None:
    """Wait for every adopted descendant so RUSAGE_CHILDREN includes it (this process starts no other children)."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``command``; return (wall seconds, CPU seconds of it and all its descendants)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    _reap_descendants()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def prepare_data(root: Path, env: dict[str, str], real: bool, num_phantoms: int, workers: int) -> tuple[str, str]:
    """Labeled nnU-Net raw dataset + nnssl raw dataset linking the same images; returns (nnU-Net id, nnssl id)."""
    nnunet_raw = Path(env["nnUNet_raw"])
    if real:
        if not REAL_DATASET.is_dir():
            sys.exit(f"{REAL_DATASET} not found (set NNSSL_SHARED_DATA to the folder that holds Dataset510_SarcomaCT)")
        source = nnunet_raw / REAL_DATASET.name
        source.symlink_to(REAL_DATASET, target_is_directory=True)
        nnunet_id, ssl_id, ssl_name = REAL_ID, REAL_SSL_ID, REAL_SSL_NAME
    else:
        # in a subprocess: this process must have no long-lived children of its own (see _reap_descendants)
        _run([str(BIN / "nnssl_make_phantoms"), "--labeled", str(num_phantoms), "-d", str(PHANTOM_ID), "-n",
              PHANTOM_NAME, "--output-root", str(nnunet_raw), "-np", str(workers)], env)
        source = nnunet_raw / f"Dataset{PHANTOM_ID:03d}_{PHANTOM_NAME}"
        nnunet_id, ssl_id, ssl_name = PHANTOM_ID, PHANTOM_SSL_ID, PHANTOM_NAME
    _run([str(BIN / "nnssl_convert"), "--from-nnunet", str(source), "-d", str(ssl_id), "-n", ssl_name], env)
    return str(nnunet_id), str(ssl_id)


def _clear(folder: Path) -> None:
    for child in folder.iterdir() if folder.is_dir() else []:
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def time_nnssl(env: dict[str, str], dataset: str, workers: int) -> Timing:
    _clear(Path(env["nnssl_preprocessed"]))
    command = [str(BIN / "nnssl_plan_and_preprocess"), "-d", dataset, "-np", str(workers)]
    wall, cpu = _run(command, env)
    folder = next(Path(env["nnssl_preprocessed"]).iterdir())
    return Timing("nnssl", " ".join(command).replace(str(BIN) + "/", ""), wall, cpu,
                  len(complete_identifiers(data_folder(folder))))


def time_nnunet(env: dict[str, str], dataset: str, workers: int) -> Timing:
    _clear(Path(env["nnUNet_preprocessed"]))
    command = [str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", dataset, "-c", "3d_fullres", "-np", str(workers),
               "-npfp", str(workers)]
    wall, cpu = _run(command, env)
    folder = next(Path(env["nnUNet_preprocessed"]).iterdir()) / "nnUNetPlans_3d_fullres"
    cases = len(list(folder.glob("*.pkl")))
    return Timing("nnU-Net", " ".join(command).replace(str(BIN) + "/", ""), wall, cpu, cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true", help=f"use {REAL_DATASET} instead of phantoms")
    parser.add_argument("--phantoms", type=int, default=DEFAULT_PHANTOMS, help="phantoms to generate (default 20)")
    parser.add_argument("-np", "--workers", type=int, default=DEFAULT_WORKERS, help="-np for both tools (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating timed runs per tool (median is reported)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    args = parser.parse_args()

    _become_subreaper()
    root = Path(tempfile.mkdtemp(prefix="nnssl_preprocess_speed_"))
    try:
        env = _env(root)
        nnunet_id, ssl_id = prepare_data(root, env, args.real, args.phantoms, args.workers)
        runs: dict[str, list[Timing]] = {"nnssl": [], "nnU-Net": []}
        for repeat in range(args.repeats):  # alternate the order so drifting machine load hits both alike
            order = [("nnssl", time_nnssl, ssl_id), ("nnU-Net", time_nnunet, nnunet_id)]
            for tool, timer, dataset in order if repeat % 2 == 0 else order[::-1]:
                runs[tool].append(timer(env, dataset, args.workers))
                print(f"  {tool:8s} run {repeat + 1}: {runs[tool][-1].wall_s:7.1f} s wall", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    wall = {tool: statistics.median(t.wall_s for t in timings) for tool, timings in runs.items()}
    cpu = {tool: statistics.median(t.cpu_s for t in timings) for tool, timings in runs.items()}
    ratio_wall, ratio_cpu = wall["nnssl"] / wall["nnU-Net"], cpu["nnssl"] / cpu["nnU-Net"]
    data = "Dataset510_SarcomaCT (real CT)" if args.real else f"{args.phantoms} CT phantoms"
    print(f"\nplan + preprocess, {data}, -np {args.workers}, {args.repeats} run(s) each, load {os.getloadavg()[0]:.1f}")
    print(f"{'tool':10s} {'cases':>6s} {'wall s':>8s} {'CPU s':>8s}  command")
    for tool, timings in runs.items():
        print(f"{tool:10s} {timings[0].cases:6d} {wall[tool]:8.1f} {cpu[tool]:8.1f}  {timings[0].command}")
    verdict = "meets" if ratio_wall <= GOAL_RATIO else "misses"
    print(f"ratio nnssl / nnU-Net: {ratio_wall:.2f}x wall, {ratio_cpu:.2f}x CPU ({verdict} the goal <= {GOAL_RATIO}x)")
    write_json_atomic({
        "data": data, "workers": args.workers, "repeats": args.repeats,
        "runs": {tool: [asdict(t) for t in timings] for tool, timings in runs.items()},
        "median_wall_s": wall, "median_cpu_s": cpu, "ratio_wall": ratio_wall, "ratio_cpu": ratio_cpu,
        "goal_ratio": GOAL_RATIO, "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(),
        "machine": platform.platform(), "python": platform.python_version(),
    }, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
