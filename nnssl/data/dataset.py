"""Reading nnssl's preprocessed data: the plans plus nnU-Net 2.8's blosc2 case folder.

Layout (the "Preprocessed data" contract)::

    nnssl_preprocessed/DatasetXXX_Name/
        dataset_fingerprint.json
        nnsslPlans.json                   # nnssl.config.plans.Plans
        nnsslPlans_3d/                    # <plans_name>_3d, read by nnUNetDatasetBlosc2
            <case>.b2nd                   # float32 (C, Z, Y, X), normalized
            <case>_seg.b2nd               # int8 (1, Z, Y, X) body mask: 1 body, 0 outside
            <case>.pkl                    # nnU-Net properties + "body_locations" int64 (K, 3) (z, y, x)

A case is complete when its ``.pkl`` exists (it is written last).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

from nnssl.config.plans import DEFAULT_PLANS_NAME, Plans
from nnssl.errors import NnsslError
from nnssl.paths import find_dataset, nnssl_preprocessed

DATA_SUFFIX = ".b2nd"
SEG_SUFFIX = "_seg.b2nd"
PROPERTIES_SUFFIX = ".pkl"
BODY_LOCATIONS_KEY = "body_locations"
DATA_FOLDER_SUFFIX = "_3d"
PLANS_FILE_SUFFIX = ".json"


def data_folder(preprocessed_dataset: Path, plans_name: str = DEFAULT_PLANS_NAME) -> Path:
    """``nnssl_preprocessed/DatasetXXX_Name/<plans_name>_3d``: where the cases of these plans live."""
    return Path(preprocessed_dataset) / f"{plans_name}{DATA_FOLDER_SUFFIX}"


def plans_file(preprocessed_dataset: Path, plans_name: str = DEFAULT_PLANS_NAME) -> Path:
    """``nnssl_preprocessed/DatasetXXX_Name/<plans_name>.json``."""
    return Path(preprocessed_dataset) / f"{plans_name}{PLANS_FILE_SUFFIX}"


def case_files(folder: Path, identifier: str) -> tuple[Path, Path, Path]:
    """The three files of one case: data ``.b2nd``, body mask ``_seg.b2nd``, properties ``.pkl``."""
    folder = Path(folder)
    return (folder / f"{identifier}{DATA_SUFFIX}", folder / f"{identifier}{SEG_SUFFIX}",
            folder / f"{identifier}{PROPERTIES_SUFFIX}")


def complete_identifiers(folder: Path) -> list[str]:
    """Sorted identifiers of the cases whose three files all exist (an interrupted write lacks the ``.pkl``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = {p.name for p in folder.iterdir()}
    found = []
    for name in names:
        if name.endswith(PROPERTIES_SUFFIX) and not name.startswith("."):
            identifier = name[: -len(PROPERTIES_SUFFIX)]
            if f"{identifier}{DATA_SUFFIX}" in names and f"{identifier}{SEG_SUFFIX}" in names:
                found.append(identifier)
    return sorted(found)


class PreprocessedDataset:
    """The plans and complete cases of one preprocessed dataset, read through ``nnUNetDatasetBlosc2``.

    Args:
        preprocessed_dataset: ``nnssl_preprocessed/DatasetXXX_Name``.
        plans_name: which plans (default ``nnsslPlans``).

    Raises:
        NnsslError: no plans or no complete case; the message names the command to run.
    """

    def __init__(self, preprocessed_dataset: Path, plans_name: str = DEFAULT_PLANS_NAME) -> None:
        self.root = Path(preprocessed_dataset)
        hint = f"run `nnssl_plan_and_preprocess -d {self.root.name}`"
        path = plans_file(self.root, plans_name)
        if not path.is_file():
            raise NnsslError(f"no plans at {path}; {hint} first")
        self.plans = Plans.load(path)
        self.folder = data_folder(self.root, plans_name)
        self.identifiers = complete_identifiers(self.folder)
        if not self.identifiers:
            raise NnsslError(f"no preprocessed cases in {self.folder}; {hint} first")
        self.blosc2 = nnUNetDatasetBlosc2(str(self.folder), identifiers=list(self.identifiers))

    def __len__(self) -> int:
        return len(self.identifiers)

    def load_case(self, identifier: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """One case, memory-mapped.

        Returns:
            ``(data, body_mask, properties)``: blosc2 arrays (C, Z, Y, X) float32 and (1, Z, Y, X) int8, and the
            properties dict with ``body_locations`` (K, 3).
        """
        data, seg, _, properties = self.blosc2.load_case(identifier)
        return data, seg, properties


def open_preprocessed(dataset: str | int, plans_name: str = DEFAULT_PLANS_NAME) -> PreprocessedDataset:
    """Resolve ``dataset`` (id or ``DatasetXXX_Name``) under ``$nnssl_preprocessed`` and open it.

    Raises:
        NnsslError: env var unset, unknown dataset, or not preprocessed (names the command to run).
    """
    root = nnssl_preprocessed()
    try:
        folder = find_dataset(root, dataset)
    except NnsslError as err:
        raise NnsslError(f"{err}; if it exists in $nnssl_raw, run `nnssl_plan_and_preprocess -d {dataset}`") from None
    return PreprocessedDataset(folder, plans_name)
