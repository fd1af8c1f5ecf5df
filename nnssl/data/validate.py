"""Whole-dataset verification: read every case of a raw dataset and report all problems in one error.

The per-image checks live in :mod:`nnssl.data.image_checks` and are exported here as well.
"""
from __future__ import annotations

from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

from nnssl.data.image_checks import check_image_array, check_image_file
from nnssl.data.raw_dataset import RawCase, list_raw_cases, read_case
from nnssl.errors import NnsslError

__all__ = ["check_image_array", "check_image_file", "verify_dataset"]


def _problem_of(case: RawCase) -> str | None:
    """One case's problem as text (None if fine); runs in worker processes."""
    try:
        read_case(case)
    except NnsslError as err:
        return str(err)
    return None


def verify_dataset(dataset_folder: Path, num_processes: int = 2) -> list[RawCase]:
    """Read and check every case of a raw dataset; report all problems at once.

    Args:
        dataset_folder: ``nnssl_raw/DatasetXXX_Name``.
        num_processes: worker processes; 1 or less checks in this process.

    Returns:
        The cases, in identifier order.

    Raises:
        NnsslError: listing every broken case (structure problems first, see ``list_raw_cases``).
    """
    dataset_folder = Path(dataset_folder)
    cases = list_raw_cases(dataset_folder)
    desc = f"verifying {dataset_folder.name}"
    if num_processes <= 1:
        problems = [_problem_of(case) for case in tqdm(cases, desc=desc, unit="case")]
    else:
        with Pool(min(num_processes, len(cases))) as pool:
            problems = list(tqdm(pool.imap(_problem_of, cases), total=len(cases), desc=desc, unit="case"))
    found = [p for p in problems if p is not None]
    if found:
        raise NnsslError(f"{len(found)} of {len(cases)} case(s) in {dataset_folder} failed verification: "
                         + " | ".join(found))
    return cases
