"""``nnssl_demo``: the embedded default job on CT phantoms, into ``demo_output/``.

For now: generate unlabeled thorax CT phantoms, then fingerprint, plan and preprocess them. Every step reuses what a
previous run finished, so rerunning is cheap. The nnssl_* / nnUNet_* folder variables that are not set point into the
output folder.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from nnssl.cli.entry import cli_entry
from nnssl.cli.plan_and_preprocess import DEFAULT_NUM_PROCESSES, plan_and_preprocess
from nnssl.config.plans import DEFAULT_PLANS_NAME, Plans
from nnssl.data.dataset import complete_identifiers, plans_file
from nnssl.data.phantoms import write_phantom_dataset
from nnssl.data.raw_dataset import DATASET_JSON
from nnssl.paths import PREPROCESSED, RAW, RESULTS, dataset_name, env_folder

DEFAULT_OUTPUT = Path("demo_output")
FOLDER_VARIABLES = (RAW, PREPROCESSED, RESULTS, "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
UNLABELED_ID = 500
UNLABELED_NAME = "PhantomCTUnlabeled"
DEFAULT_NUM_CASES = 40
DEFAULT_SEED = 0


def point_folders_into(output: Path) -> dict[str, Path]:
    """Set every unset nnssl_* / nnUNet_* folder variable to ``output/<variable>``; return all six folders."""
    folders = {}
    for variable in FOLDER_VARIABLES:
        if not os.environ.get(variable, "").strip():
            os.environ[variable] = str((output / variable).resolve())
        folders[variable] = env_folder(variable)
        folders[variable].mkdir(parents=True, exist_ok=True)
    return folders


def ensure_phantoms(num_cases: int, seed: int, num_processes: int) -> Path:
    """The unlabeled phantom dataset in ``$nnssl_raw``, generated unless a finished one is there."""
    folder = env_folder(RAW) / dataset_name(UNLABELED_ID, UNLABELED_NAME)
    if (folder / DATASET_JSON).is_file():
        print(f"reusing phantoms in {folder}")
        return folder
    return write_phantom_dataset(folder, num_cases, labeled=False, seed=seed, num_processes=num_processes)


def run_demo(output: Path = DEFAULT_OUTPUT, num_cases: int = DEFAULT_NUM_CASES, seed: int = DEFAULT_SEED,
             num_processes: int = DEFAULT_NUM_PROCESSES) -> Path:
    """Phantoms -> fingerprint -> plans -> preprocessed data; returns the preprocessed data folder."""
    folders = point_folders_into(Path(output))
    raw = ensure_phantoms(num_cases, seed, num_processes)
    data = plan_and_preprocess(raw.name, num_processes)
    plans = Plans.load(plans_file(data.parent, DEFAULT_PLANS_NAME))
    print("\nnnssl demo finished:")
    print(f"  raw phantoms:        {raw}")
    print(f"  plans:               {plans_file(data.parent, DEFAULT_PLANS_NAME)}")
    print(f"  preprocessed cases:  {data} ({len(complete_identifiers(data))} cases, patch "
          f"{'x'.join(map(str, plans.patch_size))}, spacing {'x'.join(f'{v:.3g}' for v in plans.spacing)} mm)")
    print(f"  results (later):     {folders[RESULTS]}")
    return data


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nnssl_demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT,
                        help="folder for everything the demo writes (default %(default)s)")
    parser.add_argument("-n", "--num-cases", type=int, default=DEFAULT_NUM_CASES,
                        help="unlabeled phantoms to generate (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="phantom seed (default %(default)s)")
    parser.add_argument("-np", "--num-processes", type=int, default=DEFAULT_NUM_PROCESSES,
                        help="worker processes (default %(default)s)")
    args = parser.parse_args(argv)
    run_demo(args.output, args.num_cases, args.seed, args.num_processes)
    return 0
