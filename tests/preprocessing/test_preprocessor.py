"""One case: crop box, geometry, nnunetv2 resampling parity, body locations."""
from __future__ import annotations

import numpy as np
import pytest
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape, resample_data_or_seg_to_shape
from synthetic_ct import ct_volume, write_raw_dataset

from nnssl.config.enums import Normalization
from nnssl.config.plans import IntensityStats, Plans
from nnssl.data.raw_dataset import list_raw_cases
from nnssl.planning.body_mask import body_bbox, ct_body_mask
from nnssl.preprocessing.normalization import normalize
from nnssl.preprocessing.preprocessor import (
    DATA_RESAMPLING,
    NUM_BODY_LOCATIONS,
    preprocess_case,
    resample_case,
    sample_body_locations,
)

STATS = IntensityStats(mean=0.0, std=300.0, median=40.0, percentile_00_5=-900.0, percentile_99_5=700.0, min=-1000.0,
                       max=720.0)
SPACING = (3.0, 1.0, 1.0)


def _plans(spacing=(2.0, 1.5, 1.5), normalization=Normalization.CT) -> Plans:
    return Plans(dataset_name="Dataset900_Tiny", spacing=spacing, normalization=normalization, intensity_stats=STATS,
                 patch_size=(32, 32, 32), downstream_patch_size=(32, 32, 32), median_shape=(32, 32, 32),
                 original_median_spacing=SPACING)


@pytest.fixture
def case_and_image(tmp_path):
    image = ct_volume((10, 40, 48), seed=3, table=True)
    raw = write_raw_dataset(tmp_path, "Dataset900_Tiny", {"ct": (image, SPACING)})
    return list_raw_cases(raw)[0], image


def test_crop_geometry_and_properties(case_and_image):
    case, image = case_and_image
    plans = _plans()
    data, mask, properties = preprocess_case(case, plans)
    box = body_bbox(ct_body_mask(image.astype(np.float32), "ct"))
    cropped = tuple(hi - lo for lo, hi in box)
    assert properties["bbox_used_for_cropping"] == box
    assert properties["shape_before_cropping"] == image.shape
    assert properties["shape_after_cropping_and_before_resampling"] == cropped
    # resampled shape = round(shape * old / new) per axis, by hand
    expected = tuple(int(round(s * o / n)) for s, o, n in zip(cropped, SPACING, plans.spacing, strict=True))
    assert data.shape == (1, *expected) and mask.shape == (1, *expected)
    assert tuple(compute_new_shape(cropped, SPACING, plans.spacing)) == expected
    assert data.dtype == np.float32 and mask.dtype == np.int8
    assert set(np.unique(mask)) == {0, 1}
    assert properties["spacing"] == pytest.approx(SPACING)


def test_data_equals_nnunetv2_resampling_of_the_normalized_crop(case_and_image):
    case, image = case_and_image
    plans = _plans()
    data, _, properties = preprocess_case(case, plans)
    z, y, x = (slice(lo, hi) for lo, hi in properties["bbox_used_for_cropping"])
    crop = normalize(image[None, z, y, x].astype(np.float32), plans)
    new_shape = compute_new_shape(crop.shape[1:], SPACING, plans.spacing)
    reference = resample_data_or_seg_to_shape(crop, new_shape, SPACING, plans.spacing, **DATA_RESAMPLING)
    np.testing.assert_allclose(data, reference, rtol=1e-5, atol=1e-5)
    assert data.min() >= (STATS.percentile_00_5 - STATS.mean) / STATS.std - 0.5, "clipped before resampling"


def test_mask_resampling_matches_nnunetv2_segmentation_resampling():
    rng = np.random.default_rng(0)
    mask = np.zeros((12, 30, 34), dtype=bool)
    mask[2:10, 5:25, 4:30] = True
    mask &= rng.random(mask.shape) > 0.1  # ragged edges and holes
    data = mask[None].astype(np.float32)
    old, new = (3.0, 1.0, 1.0), (2.0, 1.3, 0.7)
    _, ours = resample_case(data, mask, old, new)
    new_shape = compute_new_shape(mask.shape, old, new)
    theirs = resample_data_or_seg_to_shape(mask[None].astype(np.int8), new_shape, old, new, is_seg=True, order=1,
                                           order_z=0, force_separate_z=None)[0]
    disagree = np.mean(ours != (theirs > 0))
    assert disagree < 1e-3, f"{disagree:.2%} of voxels differ from nnunetv2's seg resampling (ties only)"


def test_no_resampling_when_the_spacing_is_already_planned(case_and_image):
    case, _ = case_and_image
    data, _, properties = preprocess_case(case, _plans(spacing=SPACING))
    assert data.shape[1:] == properties["shape_after_cropping_and_before_resampling"]


def test_body_locations_are_distinct_body_voxels_and_reproducible():
    rng = np.random.default_rng(1)
    mask = rng.random((30, 60, 70)) > 0.4  # ~75,000 voxels: rejection sampling path
    locations = sample_body_locations(mask)
    assert locations.shape == (NUM_BODY_LOCATIONS, 3) and locations.dtype == np.int64
    assert mask[tuple(locations.T)].all()
    assert len({tuple(p) for p in locations}) == NUM_BODY_LOCATIONS
    np.testing.assert_array_equal(sample_body_locations(mask), locations)
    # not biased toward the start of the volume (np.unique sorts)
    assert abs(locations[:, 0].mean() - 14.5) < 1.0


def test_small_bodies_keep_every_voxel():
    mask = np.zeros((4, 5, 6), dtype=bool)
    mask[1, 2, 3] = mask[2, 2, 2] = True
    np.testing.assert_array_equal(sample_body_locations(mask), [[1, 2, 3], [2, 2, 2]])


def test_zscore_plans_use_the_nonzero_mask(tmp_path):
    image = np.clip(ct_volume((6, 20, 24)).astype(np.int16) + 1000, 0, None)
    raw = write_raw_dataset(tmp_path, "Dataset901_MR", {"mr": (image, SPACING)}, channel_name="T1")
    data, mask, _ = preprocess_case(list_raw_cases(raw)[0], _plans(spacing=SPACING, normalization=Normalization.ZSCORE))
    assert data.mean() == pytest.approx(0.0, abs=1e-4) and data.std() == pytest.approx(1.0, abs=1e-3)
    assert mask.mean() > 0.5
