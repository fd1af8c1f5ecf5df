"""Fingerprint of a tiny synthetic CT dataset: geometry, body statistics, determinism, JSON round-trip, reuse."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from synthetic_ct import TISSUE_HU, ct_volume, default_cases, write_raw_dataset

from nnssl.errors import NnsslError
from nnssl.planning.body_mask import body_bbox, ct_body_mask, nonzero_mask
from nnssl.planning.fingerprint import (
    SAMPLES_PER_CASE,
    DatasetFingerprint,
    extract_fingerprint,
    intensity_statistics,
    load_or_extract_fingerprint,
)


@pytest.fixture
def raw(tmp_path):
    return write_raw_dataset(tmp_path / "raw", "Dataset900_Tiny", default_cases())


def test_geometry_per_case(raw):
    fingerprint = extract_fingerprint(raw, num_processes=1)
    cases = {c.identifier: c for c in fingerprint.cases}
    assert list(cases) == ["ct_a", "ct_b", "ct_c"]
    for identifier, (array, spacing) in default_cases().items():
        case = cases[identifier]
        assert case.spacing == pytest.approx(spacing)
        assert case.shape == array.shape
        box = body_bbox(ct_body_mask(array.astype(np.float32), identifier))
        assert case.shape_after_crop == tuple(hi - lo for lo, hi in box)
        assert case.shape_after_crop[1] < case.shape[1], "the air around the body is cropped away"
        assert case.direction == pytest.approx(tuple(np.eye(3).ravel()))
        assert case.min == array.min() and case.max == array.max()
        assert case.has_air and case.has_negative_values
    assert fingerprint.channel_names == {"0": "CT"}
    assert fingerprint.image_reader_writer == "SimpleITKIO"


def test_body_statistics(raw):
    stats = extract_fingerprint(raw, num_processes=1).intensity_stats
    # body = tissue (40 HU) + lungs (-850) + bone (700), noise sd 5: median is tissue, 0.5 pct in the lungs
    assert stats.median == pytest.approx(TISSUE_HU, abs=10)
    assert stats.percentile_00_5 < -800 and stats.percentile_99_5 > 650
    assert stats.min <= stats.percentile_00_5 < stats.mean < stats.percentile_99_5 <= stats.max
    assert stats.std > 100


def test_intensity_statistics_by_hand():
    samples = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    stats = intensity_statistics(samples)
    assert stats.mean == 2.5 and stats.median == 2.5 and stats.min == 1 and stats.max == 4
    assert stats.std == pytest.approx(np.sqrt(1.25))
    assert stats.percentile_00_5 == pytest.approx(1.015) and stats.percentile_99_5 == pytest.approx(3.985)


def test_sampling_is_deterministic_and_parallel_equals_serial(raw):
    serial = extract_fingerprint(raw, num_processes=1)
    assert extract_fingerprint(raw, num_processes=1) == serial
    assert extract_fingerprint(raw, num_processes=2) == serial
    assert serial.samples_per_case == SAMPLES_PER_CASE


def test_json_round_trip(raw, tmp_path):
    fingerprint = extract_fingerprint(raw, num_processes=1)
    fingerprint.save(tmp_path / "fp.json")
    assert DatasetFingerprint.load(tmp_path / "fp.json") == fingerprint


def test_malformed_json_is_refused(tmp_path):
    path = tmp_path / "dataset_fingerprint.json"
    path.write_text('{"version": 1, "cases": []}')
    with pytest.raises(NnsslError, match="malformed fingerprint.*--clean"):
        DatasetFingerprint.load(path)


def test_reused_while_the_cases_are_the_same(raw, tmp_path, capsys):
    out = tmp_path / "pp" / "dataset_fingerprint.json"
    first = load_or_extract_fingerprint(raw, out, num_processes=1)
    assert load_or_extract_fingerprint(raw, out, num_processes=1) == first
    assert "reusing" in capsys.readouterr().out
    shutil.copy(raw / "imagesTr" / "ct_a_0000.nii.gz", raw / "imagesTr" / "ct_d_0000.nii.gz")
    meta = (raw / "dataset.json").read_text()
    (raw / "dataset.json").write_text(meta.replace('"numTraining": 3', '"numTraining": 4'))
    again = load_or_extract_fingerprint(raw, out, num_processes=1)
    assert [c.identifier for c in again.cases] == ["ct_a", "ct_b", "ct_c", "ct_d"]


def test_non_ct_case_uses_the_nonzero_mask(tmp_path):
    mr = np.clip(ct_volume((6, 20, 24)).astype(np.int16) + 1000, 0, None)  # no negative values
    raw = write_raw_dataset(tmp_path, "Dataset901_MR", {"mr": (mr, (1.0, 1.0, 1.0))}, channel_name="T1")
    case = extract_fingerprint(raw, num_processes=1).cases[0]
    assert not case.has_negative_values
    assert case.body_fraction == pytest.approx(float(nonzero_mask(mr[None]).mean()))
    assert case.shape_after_crop == mr.shape
