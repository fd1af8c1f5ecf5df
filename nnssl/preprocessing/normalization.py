"""Intensity normalization per plans scheme, done by nnunetv2's own normalization classes.

``ct``: clip to the body's 0.5/99.5 percentiles, then z-score with the dataset's body mean/std (``CTNormalization``).
``zscore``: per-image, per-channel z-score over the whole (cropped) image (``ZScoreNormalization``).
"""
from __future__ import annotations

import numpy as np
from nnunetv2.preprocessing.normalization.default_normalization_schemes import (
    CTNormalization,
    ImageNormalization,
    ZScoreNormalization,
)

from nnssl.config.enums import Normalization
from nnssl.config.plans import IntensityStats, Plans

# scheme -> nnunetv2 class; ZScore runs without a mask: CT-like images have no zero background to exclude.
NORMALIZERS: dict[Normalization, type[ImageNormalization]] = {
    Normalization.CT: CTNormalization,
    Normalization.ZSCORE: ZScoreNormalization,
}


def _intensity_properties(stats: IntensityStats | None) -> dict[str, float]:
    """Plans statistics in the dict form nnunetv2's normalizers read."""
    if stats is None:
        return {}
    return {"mean": stats.mean, "std": stats.std, "median": stats.median, "percentile_00_5": stats.percentile_00_5,
            "percentile_99_5": stats.percentile_99_5, "min": stats.min, "max": stats.max}


def normalize(data: np.ndarray, plans: Plans) -> np.ndarray:
    """Normalize every channel in place as the plans say.

    Args:
        data: float32 image, (C, Z, Y, X); overwritten.
        plans: the plans (scheme and, for ``ct``, the statistics).

    Returns:
        ``data``, normalized, (C, Z, Y, X) float32.
    """
    normalizer = NORMALIZERS[plans.normalization](use_mask_for_norm=False,
                                                  intensityproperties=_intensity_properties(plans.intensity_stats),
                                                  target_dtype=np.float32)
    for c in range(data.shape[0]):
        data[c] = normalizer.run(data[c])  # (Z, Y, X)
    return data
