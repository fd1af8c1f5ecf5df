"""``nnssl_extract_fingerprint``, ``nnssl_plan_experiment``, ``nnssl_preprocess`` and ``nnssl_plan_and_preprocess``.

Thin command-line wrappers; the typed functions below are what the demo and benchmarks call.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from nnssl.cli.entry import cli_entry
from nnssl.config.enums import Normalization
from nnssl.config.plans import DEFAULT_PLANS_NAME, Plans
from nnssl.data.dataset import data_folder, plans_file
from nnssl.data.validate import verify_dataset
from nnssl.errors import NnsslError
from nnssl.paths import find_dataset, nnssl_preprocessed, nnssl_raw
from nnssl.planning.fingerprint import FINGERPRINT_FILE, DatasetFingerprint, load_or_extract_fingerprint
from nnssl.planning.patch_size import PATCH_GRID
from nnssl.planning.planner import plan_experiment
from nnssl.preprocessing.run import preprocess_dataset

# Each worker holds one case (a few hundred MB for a 512x512x600 CT); 2 suits a laptop, raise it on bigger machines.
DEFAULT_NUM_PROCESSES = 2


def dataset_folders(dataset: str | int) -> tuple[Path, Path]:
    """``(nnssl_raw/DatasetXXX_Name, nnssl_preprocessed/DatasetXXX_Name)`` for an id or name."""
    raw = find_dataset(nnssl_raw(), dataset)
    return raw, nnssl_preprocessed() / raw.name


def extract_fingerprint(dataset: str | int, num_processes: int = DEFAULT_NUM_PROCESSES, clean: bool = False,
                        verify: bool = False) -> DatasetFingerprint:
    """Step 1: fingerprint the raw dataset (reused if it lists the same cases, unless ``clean``)."""
    raw, preprocessed = dataset_folders(dataset)
    if verify:
        verify_dataset(raw, num_processes)
    fingerprint = load_or_extract_fingerprint(raw, preprocessed / FINGERPRINT_FILE, num_processes, clean)
    print(f"fingerprint: {preprocessed / FINGERPRINT_FILE}")
    return fingerprint


def plan(dataset: str | int, spacing: Sequence[float] | None = None, patch_size: Sequence[int] | None = None,
         normalization: str | None = None, plans_name: str = DEFAULT_PLANS_NAME) -> Plans:
    """Step 2: plans from the fingerprint, written to ``<plans_name>.json``; prints the decisions."""
    raw, preprocessed = dataset_folders(dataset)
    fingerprint_file = preprocessed / FINGERPRINT_FILE
    if not fingerprint_file.is_file():
        raise NnsslError(f"no fingerprint at {fingerprint_file}; run `nnssl_extract_fingerprint -d {dataset}` first")
    plans = plan_experiment(DatasetFingerprint.load(fingerprint_file), preprocessed, spacing, patch_size,
                            normalization, plans_name)
    print(f"plans: {plans_file(preprocessed, plans_name)}")
    for decision in plans.decisions:
        print(f"  - {decision}")
    return plans


def preprocess(dataset: str | int, num_processes: int = DEFAULT_NUM_PROCESSES, plans_name: str = DEFAULT_PLANS_NAME,
               verify: bool = False) -> Path:
    """Step 3: preprocess every case not done yet under the plans; returns the data folder."""
    raw, preprocessed = dataset_folders(dataset)
    path = plans_file(preprocessed, plans_name)
    if not path.is_file():
        raise NnsslError(f"no plans at {path}; run `nnssl_plan_experiment -d {dataset}` (or "
                         f"`nnssl_plan_and_preprocess -d {dataset}`) first")
    if verify:
        verify_dataset(raw, num_processes)
    plans = Plans.load(path)
    preprocess_dataset(raw, preprocessed, plans, num_processes)
    folder = data_folder(preprocessed, plans_name)
    print(f"preprocessed data: {folder}")
    return folder


def plan_and_preprocess(dataset: str | int, num_processes: int = DEFAULT_NUM_PROCESSES, verify: bool = False,
                        clean: bool = False, spacing: Sequence[float] | None = None,
                        patch_size: Sequence[int] | None = None, normalization: str | None = None,
                        plans_name: str = DEFAULT_PLANS_NAME) -> Path:
    """All three steps; finished work (fingerprint, cases done under the same plans) is reused."""
    extract_fingerprint(dataset, num_processes, clean, verify)
    plan(dataset, spacing, patch_size, normalization, plans_name)
    return preprocess(dataset, num_processes, plans_name)


def _add_dataset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", nargs="+", required=True, metavar="ID",
                        help="dataset id(s) or DatasetXXX_Name folder(s) in $nnssl_raw")


def _add_processes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-np", "--num-processes", type=int, default=DEFAULT_NUM_PROCESSES, metavar="N",
                        help=f"worker processes, each holding one case in memory (default {DEFAULT_NUM_PROCESSES}; "
                             "1 runs in this process)")


def _add_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verify", action="store_true",
                        help="first read every raw image and check it (NaN/inf, truncated, 2D, constant, channel "
                             "count); lists all bad files at once")


def _add_clean(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clean", action="store_true",
                        help="extract the fingerprint anew even if dataset_fingerprint.json lists the same cases")


def _add_plans_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--plans-name", default=DEFAULT_PLANS_NAME,
                        help=f"plans identifier: <name>.json and data folder <name>_3d (default {DEFAULT_PLANS_NAME})")


def _add_plan_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"),
                        help="target spacing in mm instead of the median (with nnU-Net's anisotropy rule)")
    parser.add_argument("--patch-size", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        help=f"pretraining patch in voxels, each a multiple of {PATCH_GRID} (default: the median "
                             "resampled shape on that grid, at most 160^3)")
    parser.add_argument("--normalization", choices=[str(n) for n in Normalization],
                        help="force the intensity scheme (default: ct if the data looks like CT in HU, else zscore)")


def _parser(description: str, *adders) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for add in adders:
        add(parser)
    return parser


FOLDERS = "Reads $nnssl_raw/DatasetXXX_Name, writes $nnssl_preprocessed/DatasetXXX_Name."


@cli_entry
def extract_fingerprint_main(argv: Sequence[str] | None = None) -> int:
    args = _parser(f"Step 1 of 3: per-case spacing, shape, orientation and body box, and CT intensity statistics "
                   f"sampled inside the body (10,000 voxels per case) -> dataset_fingerprint.json. {FOLDERS}",
                   _add_dataset, _add_processes, _add_verify, _add_clean).parse_args(argv)
    for dataset in args.dataset:
        extract_fingerprint(dataset, args.num_processes, args.clean, args.verify)
    return 0


@cli_entry
def plan_experiment_main(argv: Sequence[str] | None = None) -> int:
    args = _parser(f"Step 2 of 3: plans from the fingerprint -> nnsslPlans.json: target spacing, normalization and "
                   f"statistics, pretraining and downstream patch size, each with the reason. {FOLDERS}",
                   _add_dataset, _add_plans_name, _add_plan_overrides).parse_args(argv)
    for dataset in args.dataset:
        plan(dataset, args.spacing, args.patch_size, args.normalization, args.plans_name)
    return 0


@cli_entry
def preprocess_main(argv: Sequence[str] | None = None) -> int:
    args = _parser(f"Step 3 of 3: crop to the body, normalize, resample with nnU-Net's functions and store nnU-Net "
                   f"2.8 blosc2 cases in <plans>_3d/. Resumes: cases already done under the same plans are kept. "
                   f"{FOLDERS}", _add_dataset, _add_processes, _add_plans_name, _add_verify).parse_args(argv)
    for dataset in args.dataset:
        preprocess(dataset, args.num_processes, args.plans_name, args.verify)
    return 0


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser(f"Fingerprint, plan and preprocess unlabeled CT for pretraining (the three steps of "
                   f"nnssl_extract_fingerprint, nnssl_plan_experiment and nnssl_preprocess). Rerunning reuses the "
                   f"fingerprint and the cases already done. {FOLDERS}", _add_dataset, _add_processes, _add_verify,
                   _add_clean, _add_plans_name, _add_plan_overrides).parse_args(argv)
    for dataset in args.dataset:
        plan_and_preprocess(dataset, args.num_processes, args.verify, args.clean, args.spacing, args.patch_size,
                            args.normalization, args.plans_name)
    return 0
