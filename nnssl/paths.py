"""Env-var folders (nnU-Net style) and ``DatasetXXX_Name`` resolution, in one place."""
from __future__ import annotations

import os
import re
from pathlib import Path

from nnssl.errors import NnsslError

RAW = "nnssl_raw"
PREPROCESSED = "nnssl_preprocessed"
RESULTS = "nnssl_results"

_DATASET_RE = re.compile(r"^Dataset(\d{3})_(\w+)$")


def env_folder(variable: str) -> Path:
    """Return the folder named by ``variable``; raise a one-line fix if it is unset or empty."""
    value = os.environ.get(variable, "").strip()
    if not value:
        raise NnsslError(
            f"environment variable {variable} is not set; set it to a folder, e.g. "
            f"`export {variable}=/data/{variable}` (see README, 'Folders')"
        )
    return Path(value).expanduser()


def nnssl_raw() -> Path:
    return env_folder(RAW)


def nnssl_preprocessed() -> Path:
    return env_folder(PREPROCESSED)


def nnssl_results() -> Path:
    return env_folder(RESULTS)


def dataset_name(dataset_id: int, name: str) -> str:
    """``(500, "LungCT")`` -> ``"Dataset500_LungCT"``."""
    if not 0 < dataset_id < 1000:
        raise NnsslError(f"dataset id must be between 1 and 999, got {dataset_id}")
    if not re.fullmatch(r"\w+", name):
        raise NnsslError(f"dataset name {name!r} may contain only letters, digits and '_'")
    return f"Dataset{dataset_id:03d}_{name}"


def parse_dataset_name(folder_name: str) -> tuple[int, str] | None:
    """``"Dataset500_LungCT"`` -> ``(500, "LungCT")``; None for anything else."""
    match = _DATASET_RE.match(folder_name)
    return (int(match.group(1)), match.group(2)) if match else None


def find_dataset(root: Path, dataset: str | int) -> Path:
    """Resolve a dataset by number (``500``, ``"500"``) or full name (``"Dataset500_LungCT"``) inside ``root``.

    Raises:
        NnsslError: no such dataset, or the number is ambiguous.
    """
    root = Path(root)
    key = str(dataset).strip()
    candidates = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if key.isdigit():
        matches = [p for p in candidates if (parsed := parse_dataset_name(p.name)) and parsed[0] == int(key)]
    else:
        matches = [p for p in candidates if p.name == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        raise NnsslError(f"dataset id {key} is ambiguous in {root}: {names}; pass the full DatasetXXX_Name")
    known = ", ".join(p.name for p in candidates if parse_dataset_name(p.name)) or "none"
    raise NnsslError(
        f"no dataset {key!r} in {root} (found: {known}); create it with nnssl_convert or nnssl_make_phantoms"
    )
