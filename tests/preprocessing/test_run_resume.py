"""Whole-dataset preprocessing: nnU-Net blosc2 layout, resume after an interruption, redo under new plans."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from synthetic_ct import default_cases, write_raw_dataset

from nnssl.data.dataset import PreprocessedDataset, case_files, complete_identifiers
from nnssl.errors import NnsslError
from nnssl.planning.fingerprint import extract_fingerprint
from nnssl.planning.planner import plan_experiment
from nnssl.preprocessing import run
from nnssl.preprocessing.run import TEMP_PREFIX, preprocess_dataset


@pytest.fixture
def prepared(tmp_path):
    raw = write_raw_dataset(tmp_path / "raw", "Dataset900_Tiny", default_cases())
    preprocessed = tmp_path / "pp" / "Dataset900_Tiny"
    plans = plan_experiment(extract_fingerprint(raw, num_processes=1), preprocessed)
    return raw, preprocessed, plans


def _snapshot(folder):
    dataset = nnUNetDatasetBlosc2(str(folder))
    out = {}
    for identifier in dataset.identifiers:
        data, seg, _, properties = dataset.load_case(identifier)
        out[identifier] = (np.asarray(data[:]), np.asarray(seg[:]), properties["body_locations"])
    return out


def test_layout_reads_back_with_nnunetv2(prepared):
    raw, preprocessed, plans = prepared
    assert preprocess_dataset(raw, preprocessed, plans, num_processes=1) == ["ct_a", "ct_b", "ct_c"]
    folder = preprocessed / "nnsslPlans_3d"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{c}{suffix}" for c in ("ct_a", "ct_b", "ct_c") for suffix in (".b2nd", "_seg.b2nd", ".pkl"))
    dataset = PreprocessedDataset(preprocessed)
    assert dataset.identifiers == ["ct_a", "ct_b", "ct_c"] and dataset.plans == plans
    data, seg, properties = dataset.load_case("ct_a")
    assert data.dtype == np.float32 and seg.dtype == np.int8 and data.shape[1:] == seg.shape[1:]
    locations = properties["body_locations"]
    assert locations.ndim == 2 and locations.shape[1] == 3
    assert (np.asarray(seg[:])[0][tuple(locations.T)] == 1).all()


def test_resume_redoes_only_the_interrupted_case(prepared, monkeypatch):
    raw, preprocessed, plans = prepared
    preprocess_dataset(raw, preprocessed, plans, num_processes=1)
    folder = preprocessed / "nnsslPlans_3d"
    before = _snapshot(folder)
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    # simulate a kill while ct_b was being written: its pkl is gone and a temp folder is left behind
    case_files(folder, "ct_b")[2].unlink()
    (folder / f"{TEMP_PREFIX}ct_b_x").mkdir()
    (folder / f"{TEMP_PREFIX}ct_b_x" / "ct_b.b2nd").write_bytes(b"partial")
    assert complete_identifiers(folder) == ["ct_a", "ct_c"]
    assert preprocess_dataset(raw, preprocessed, plans, num_processes=1) == ["ct_b"]
    assert not [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]
    after = _snapshot(folder)
    for identifier in before:
        for old, new in zip(before[identifier], after[identifier], strict=True):
            np.testing.assert_array_equal(old, new)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if "ct_b" not in p.name} == {
        name: t for name, t in mtimes.items() if "ct_b" not in name}


def test_kill_during_save_leaves_no_complete_looking_case(prepared, monkeypatch):
    raw, preprocessed, plans = prepared
    preprocess_dataset(raw, preprocessed, plans, num_processes=1)
    folder = preprocessed / "nnsslPlans_3d"
    real_replace = os.replace

    def crash_on_pkl(src, dst):
        if str(dst).endswith("ct_a.pkl"):
            raise KeyboardInterrupt  # the process dies between renaming the arrays and the pkl
        real_replace(src, dst)

    monkeypatch.setattr(run.os, "replace", crash_on_pkl)
    with pytest.raises(KeyboardInterrupt):
        preprocess_dataset(raw, preprocessed, dataclasses.replace(plans, spacing=(2.0, 1.0, 1.0)), num_processes=1)
    assert "ct_a" not in complete_identifiers(folder)
    monkeypatch.setattr(run.os, "replace", real_replace)
    assert "ct_a" in preprocess_dataset(raw, preprocessed, plans, num_processes=1)
    assert complete_identifiers(folder) == ["ct_a", "ct_b", "ct_c"]


def test_changed_plans_redo_every_case(prepared):
    raw, preprocessed, plans = prepared
    preprocess_dataset(raw, preprocessed, plans, num_processes=1)
    assert preprocess_dataset(raw, preprocessed, plans, num_processes=1) == []
    finer = dataclasses.replace(plans, spacing=(2.0, 1.0, 1.0))
    assert preprocess_dataset(raw, preprocessed, finer, num_processes=1) == ["ct_a", "ct_b", "ct_c"]
    data, _, _ = PreprocessedDataset(preprocessed).load_case("ct_a")
    assert data.shape[1] == 15  # 10 slices of 3 mm -> 15 of 2 mm


def test_a_bad_case_is_listed_and_the_others_are_written(prepared):
    raw, preprocessed, plans = prepared
    path = raw / "imagesTr" / "ct_b_0000.nii.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated copy
    with pytest.raises(NnsslError, match=r"1 of 3 case\(s\) failed: .*ct_b_0000\.nii\.gz"):
        preprocess_dataset(raw, preprocessed, plans, num_processes=1)
    assert complete_identifiers(preprocessed / "nnsslPlans_3d") == ["ct_a", "ct_c"]


def test_parallel_equals_serial(prepared, tmp_path):
    raw, preprocessed, plans = prepared
    preprocess_dataset(raw, preprocessed, plans, num_processes=1)
    serial = _snapshot(preprocessed / "nnsslPlans_3d")
    other = tmp_path / "pp2" / "Dataset900_Tiny"
    preprocess_dataset(raw, other, plans, num_processes=2)
    parallel = _snapshot(other / "nnsslPlans_3d")
    assert serial.keys() == parallel.keys()
    for identifier in serial:
        for a, b in zip(serial[identifier], parallel[identifier], strict=True):
            np.testing.assert_array_equal(a, b)


def test_cases_removed_from_the_raw_dataset_are_removed(prepared):
    raw, preprocessed, plans = prepared
    preprocess_dataset(raw, preprocessed, plans, num_processes=1)
    folder = preprocessed / "nnsslPlans_3d"
    case_files(folder, "ct_c")[2].unlink()  # ct_c half-written ...
    for path in (raw / "imagesTr").glob("ct_c_*"):  # ... and then deleted from the raw dataset
        path.unlink()
    meta = (raw / "dataset.json").read_text()
    (raw / "dataset.json").write_text(meta.replace('"numTraining": 3', '"numTraining": 2'))
    assert preprocess_dataset(raw, preprocessed, plans, num_processes=1) == []
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{c}{suffix}" for c in ("ct_a", "ct_b") for suffix in (".b2nd", "_seg.b2nd", ".pkl"))
