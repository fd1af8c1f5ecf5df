"""Normalization against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest

from nnssl.config.enums import Normalization
from nnssl.config.plans import IntensityStats, Plans
from nnssl.preprocessing.normalization import normalize

STATS = IntensityStats(mean=10.0, std=20.0, median=0.0, percentile_00_5=-100.0, percentile_99_5=100.0, min=-1000.0,
                       max=2000.0)


def _plans(normalization: Normalization) -> Plans:
    return Plans(dataset_name="Dataset900_Tiny", spacing=(1.0, 1.0, 1.0), normalization=normalization,
                 intensity_stats=STATS, patch_size=(32, 32, 32), downstream_patch_size=(32, 32, 32),
                 median_shape=(32, 32, 32), original_median_spacing=(1.0, 1.0, 1.0))


def test_ct_clips_to_the_percentiles_then_zscores_with_dataset_stats():
    data = np.array([-1000.0, -100.0, 10.0, 50.0, 2000.0], dtype=np.float32).reshape(1, 1, 1, 5)
    out = normalize(data.copy(), _plans(Normalization.CT))
    # clip to [-100, 100] -> [-100, -100, 10, 50, 100]; (x - 10) / 20
    np.testing.assert_allclose(out.ravel(), [-5.5, -5.5, 0.0, 2.0, 4.5], rtol=1e-6)
    assert out.dtype == np.float32


def test_zscore_uses_each_image_and_channel_alone():
    data = np.stack([np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 10.0, 30.0, 30.0])]).astype(np.float32)
    out = normalize(data.reshape(2, 1, 1, 4).copy(), _plans(Normalization.ZSCORE))
    std_first = np.sqrt(1.25)  # population std of 1..4
    np.testing.assert_allclose(out[0].ravel(), (np.array([1, 2, 3, 4]) - 2.5) / std_first, rtol=1e-6)
    np.testing.assert_allclose(out[1].ravel(), [-1.0, -1.0, 1.0, 1.0], rtol=1e-6)
    assert out.mean() == pytest.approx(0.0, abs=1e-6)
