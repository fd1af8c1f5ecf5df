"""Planner: normalization choice, median resampled shape, overrides, plans JSON round-trip."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from synthetic_ct import default_cases, write_raw_dataset

from nnssl.config.enums import Normalization
from nnssl.config.plans import IntensityStats, Plans
from nnssl.errors import NnsslError
from nnssl.planning.fingerprint import CaseFingerprint, DatasetFingerprint, extract_fingerprint
from nnssl.planning.planner import choose_normalization, median_resampled_shape, plan, plan_experiment

STATS = IntensityStats(mean=10.0, std=100.0, median=20.0, percentile_00_5=-900.0, percentile_99_5=800.0, min=-1000.0,
                       max=1500.0)


def _case(identifier: str, low: float, spacing=(3.0, 1.0, 1.0), shape=(40, 200, 220)) -> CaseFingerprint:
    return CaseFingerprint(identifier, spacing, shape, shape, tuple(np.eye(3).ravel()), low, 1000.0, 0.5)


def _fingerprint(cases, channels=None) -> DatasetFingerprint:
    return DatasetFingerprint("Dataset900_Tiny", channels or {"0": "CT"}, ".nii.gz", "SimpleITKIO", tuple(cases),
                              STATS)


def test_ct_data_gets_ct_normalization():
    decision = choose_normalization(_fingerprint([_case("a", -1024), _case("b", -200)]))
    assert decision.normalization == Normalization.CT
    assert "-900/800" in decision.reason and "CTNormalization" in decision.reason


def test_data_without_negative_values_falls_back_to_zscore_and_says_why():
    decision = choose_normalization(_fingerprint([_case("a", -1024), _case("mr_1", 0.0), _case("mr_2", 12.0)]))
    assert decision.normalization == Normalization.ZSCORE
    assert "2 of 3 cases have no negative values (mr_1, mr_2)" in decision.reason
    assert "dataset.json calls the channel CT" in decision.reason
    assert "--normalization ct" in decision.reason


def test_data_without_air_falls_back_to_zscore():
    decision = choose_normalization(_fingerprint([_case("a", -100), _case("b", -50)]))
    assert decision.normalization == Normalization.ZSCORE
    assert "no case shows air" in decision.reason


def test_multichannel_falls_back_to_zscore():
    decision = choose_normalization(_fingerprint([_case("a", -1024)], {"0": "CT", "1": "CT"}))
    assert decision.normalization == Normalization.ZSCORE


def test_normalization_override_and_typo():
    assert choose_normalization(_fingerprint([_case("mr", 0.0)]), "ct").normalization == Normalization.CT
    with pytest.raises(NnsslError, match="did you mean 'zscore'"):
        choose_normalization(_fingerprint([_case("a", -1024)]), "zscor")


def test_median_resampled_shape_by_hand():
    cases = [_case("a", -1024, (3.0, 1.0, 1.0), (40, 200, 220)), _case("b", -1024, (1.5, 0.5, 0.5), (80, 300, 300)),
             _case("c", -1024, (3.0, 1.0, 1.0), (50, 100, 120))]
    # to (3, 1, 1): a -> (40, 200, 220), b -> (40, 150, 150), c -> (50, 100, 120); median (40, 150, 150)
    assert median_resampled_shape(_fingerprint(cases), (3.0, 1.0, 1.0)) == (40, 150, 150)


def test_plan_fills_every_field_with_a_reason():
    cases = [_case(str(i), -1024, (3.0, 0.8, 0.8), (60, 400, 400)) for i in range(3)]
    plans = plan(_fingerprint(cases))
    assert plans.spacing == pytest.approx((3.0, 0.8, 0.8))
    assert plans.normalization == Normalization.CT and plans.intensity_stats == STATS
    assert plans.median_shape == (60, 400, 400)
    assert plans.patch_size == (64, 160, 160) and plans.downstream_patch_size == (64, 160, 160)
    assert plans.num_input_channels == 1 and plans.image_reader_writer == "SimpleITKIO"
    assert len(plans.decisions) == 5
    assert [("spacing" in d, "normalization" in d, "patch" in d) for d in plans.decisions[:3]] == [
        (True, False, False), (False, True, False), (False, False, True)]


def test_overrides_reach_the_plans():
    cases = [_case(str(i), -1024, (3.0, 0.8, 0.8), (60, 400, 400)) for i in range(3)]
    plans = plan(_fingerprint(cases), spacing=(2.0, 1.0, 1.0), patch_size=(96, 128, 128), normalization="zscore")
    assert plans.spacing == (2.0, 1.0, 1.0) and plans.patch_size == (96, 128, 128)
    assert plans.normalization == Normalization.ZSCORE
    assert plans.median_shape == (90, 320, 320)
    with pytest.raises(NnsslError, match="nearest valid"):
        plan(_fingerprint(cases), patch_size=(100, 128, 128))


def test_plans_json_round_trip_and_unknown_key(tmp_path):
    raw = write_raw_dataset(tmp_path / "raw", "Dataset900_Tiny", default_cases())
    plans = plan_experiment(extract_fingerprint(raw, num_processes=1), tmp_path / "pp", plans_name="nnsslPlans")
    path = tmp_path / "pp" / "nnsslPlans.json"
    assert Plans.load(path) == plans
    edited = dataclasses.replace(plans, patch_size=(32, 32, 32))
    edited.save(path)
    assert Plans.load(path).patch_size == (32, 32, 32)
    path.write_text(path.read_text().replace('"version"', '"spacinng": [1, 1, 1],\n  "version"'))
    with pytest.raises(NnsslError, match=r"unknown plans keys \['spacinng'\]"):
        Plans.load(path)
