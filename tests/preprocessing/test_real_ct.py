"""Fingerprint -> plans -> preprocessing on real CT from ../shared/data (skipped with the reason when absent)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnssl.config.enums import Normalization
from nnssl.data.dataset import PreprocessedDataset
from nnssl.planning.fingerprint import extract_fingerprint
from nnssl.planning.planner import plan_experiment
from nnssl.preprocessing.run import preprocess_dataset

# small real volumes: two fixtures (sarcoma crop 0.98x0.98x3.27 mm, abdomen 3 mm with a flipped direction) and the
# smallest unlabeled CT (3 mm abdomen, 122x101x112)
FILES = {"sts_crop": "fixtures/sts_008_crop_0000.nii.gz", "abdomen_sm": "fixtures/totalseg_example_ct_sm.nii.gz",
         "abdomen": "unlabeled_ct/totalseg_examplect_0000.nii.gz"}


@pytest.fixture
def real_raw(shared_data: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "Dataset910_RealCT"
    (folder / "imagesTr").mkdir(parents=True)
    for identifier, relative in FILES.items():
        (folder / "imagesTr" / f"{identifier}_0000.nii.gz").symlink_to(shared_data / relative)
    meta = {"channel_names": {"0": "CT"}, "file_ending": ".nii.gz", "numTraining": len(FILES)}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def test_real_ct_is_planned_as_ct_and_preprocessed(real_raw: Path, tmp_path: Path):
    fingerprint = extract_fingerprint(real_raw, num_processes=1)
    cases = {c.identifier: c for c in fingerprint.cases}
    assert cases["sts_crop"].spacing == pytest.approx((3.27, 0.977, 0.977), abs=1e-3)
    assert cases["abdomen"].spacing == pytest.approx((3.0, 3.0, 3.0))
    assert cases["abdomen"].direction[0] == pytest.approx(-1.0), "the flipped direction is recorded"
    stats = fingerprint.intensity_stats
    assert -1100 < stats.percentile_00_5 < -300 and 300 < stats.percentile_99_5 < 2000, stats
    assert -200 < stats.median < 100, "the body's median is soft tissue"

    preprocessed = tmp_path / "pp" / real_raw.name
    plans = plan_experiment(fingerprint, preprocessed)
    assert plans.normalization == Normalization.CT
    assert plans.spacing == pytest.approx((3.0, 3.0, 3.0))  # the median of 3.27/3/3 and 0.98/3/3
    assert all(v % 32 == 0 for v in plans.patch_size)

    assert sorted(preprocess_dataset(real_raw, preprocessed, plans, num_processes=1)) == sorted(FILES)
    dataset = PreprocessedDataset(preprocessed)
    for identifier in FILES:
        data, seg, properties = dataset.load_case(identifier)
        data, seg = np.asarray(data[:]), np.asarray(seg[:])
        assert np.isfinite(data).all() and seg.any()
        bound = (plans.intensity_stats.percentile_99_5 - plans.intensity_stats.mean) / plans.intensity_stats.std
        assert data.max() <= bound + 0.5, "clipped to the 99.5 percentile before cubic resampling"
        body = data[0][seg[0] == 1]
        assert body.mean() > data[0][seg[0] == 0].mean(), "the body is brighter than the air around it"
        assert (seg[0][tuple(properties["body_locations"].T)] == 1).all()
