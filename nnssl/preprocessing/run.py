"""Preprocess a whole dataset: parallel, resumable, atomic.

Each case is written by ``nnUNetDatasetBlosc2.save_case`` into a hidden temp folder beside the output, then its files
are renamed into place with the ``.pkl`` last, so a case counts as done only when its ``.pkl`` exists. A killed run
leaves at most temp folders and a case without ``.pkl``; the next run removes the former and redoes the latter. Cases
done under other plans (different spacing, normalization, statistics or patch size) are redone too.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2

from nnssl.config.plans import Plans
from nnssl.data.dataset import DATA_SUFFIX, PROPERTIES_SUFFIX, SEG_SUFFIX, case_files, data_folder
from nnssl.data.raw_dataset import RawCase, list_raw_cases
from nnssl.planning.process_pool import map_cases
from nnssl.preprocessing.preprocessor import preprocess_case

# Stored in every case's properties: the hash of the plans values that shaped the case.
PLANS_KEY = "nnssl_preprocessing_key"
TEMP_PREFIX = ".tmp_"


def preprocessing_key(plans: Plans) -> str:
    """Hash of the plans values the preprocessed voxels depend on (not the decisions' wording)."""
    relevant = {name: plans.to_dict()[name] for name in
                ("spacing", "normalization", "intensity_stats", "patch_size", "num_input_channels")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def save_case_atomic(folder: Path, identifier: str, data: np.ndarray, mask: np.ndarray, properties: dict,
                     patch_size: tuple[int, int, int]) -> None:
    """Write one case in nnU-Net 2.8's blosc2 layout so that it is complete exactly when its ``.pkl`` exists.

    Args:
        folder: the plans' data folder.
        identifier: case id.
        data: float32 (C, Z, Y, X).
        mask: int8 (1, Z, Y, X).
        properties: pickled as ``<case>.pkl``.
        patch_size: pretraining patch (Z, Y, X); sets the blosc2 chunks/blocks (nnunetv2's ``comp_blosc2_params``).
    """
    data_file, seg_file, pkl_file = case_files(folder, identifier)
    pkl_file.unlink(missing_ok=True)  # from here on the case is not done
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f"{TEMP_PREFIX}{identifier}_"))
    try:
        blocks, chunks = comp_blosc2_params(data.shape, patch_size, data.itemsize)
        blocks_seg, chunks_seg = comp_blosc2_params(mask.shape, patch_size, mask.itemsize)
        nnUNetDatasetBlosc2.save_case(data, mask, properties, str(tmp / identifier), chunks=chunks, blocks=blocks,
                                      chunks_seg=chunks_seg, blocks_seg=blocks_seg)
        tmp_data, tmp_seg, tmp_pkl = case_files(tmp, identifier)
        os.replace(tmp_data, data_file)
        os.replace(tmp_seg, seg_file)
        os.replace(tmp_pkl, pkl_file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _preprocess_and_save(case: RawCase, plans: Plans, folder: Path, key: str) -> str:
    """Worker: preprocess and save one case; returns its identifier."""
    data, mask, properties = preprocess_case(case, plans)
    properties[PLANS_KEY] = key
    save_case_atomic(folder, case.identifier, data, mask, properties, plans.patch_size)
    return case.identifier


def _is_done(folder: Path, identifier: str, key: str) -> bool:
    try:
        with open(case_files(folder, identifier)[2], "rb") as f:
            return pickle.load(f).get(PLANS_KEY) == key
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
        return False


def _identifier_of(name: str) -> str | None:
    """``"a_seg.b2nd"``, ``"a.b2nd"``, ``"a.pkl"`` -> ``"a"``; None for other files."""
    for suffix in (SEG_SUFFIX, DATA_SUFFIX, PROPERTIES_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def clean_folder(folder: Path, identifiers: list[str]) -> None:
    """Remove leftovers of killed runs (temp folders) and the files of cases no longer in the raw dataset."""
    keep = set(identifiers)
    gone = set()
    for path in folder.iterdir():
        if path.name.startswith(TEMP_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
        elif (identifier := _identifier_of(path.name)) is not None and identifier not in keep:
            path.unlink(missing_ok=True)
            gone.add(identifier)
    if gone:
        print(f"removed {len(gone)} preprocessed case(s) no longer in the raw dataset: {', '.join(sorted(gone))}")


def preprocess_dataset(raw_dataset: Path, preprocessed_dataset: Path, plans: Plans,
                       num_processes: int = 2) -> list[str]:
    """Preprocess every case not yet done under these plans.

    Args:
        raw_dataset: ``nnssl_raw/DatasetXXX_Name``.
        preprocessed_dataset: ``nnssl_preprocessed/DatasetXXX_Name``.
        plans: the plans.
        num_processes: worker processes.

    Returns:
        Identifiers of the cases processed in this call (empty if all were done).

    Raises:
        NnsslError: bad raw cases (all listed; the others are still written).
    """
    cases = list_raw_cases(raw_dataset)
    folder = data_folder(preprocessed_dataset, plans.plans_name)
    folder.mkdir(parents=True, exist_ok=True)
    clean_folder(folder, [c.identifier for c in cases])
    key = preprocessing_key(plans)
    pending = [c for c in cases if not _is_done(folder, c.identifier, key)]
    if not pending:
        print(f"all {len(cases)} cases are already preprocessed in {folder}")
        return []
    if len(pending) < len(cases):
        print(f"{len(cases) - len(pending)} of {len(cases)} cases already preprocessed in {folder}; doing the rest")
    worker = functools.partial(_preprocess_and_save, plans=plans, folder=folder, key=key)
    done = map_cases(worker, pending, num_processes, desc=f"preprocess {Path(raw_dataset).name}")
    return [str(identifier) for identifier in done]
