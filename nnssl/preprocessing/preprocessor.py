"""Preprocess one case: read, crop to the body box, normalize, resample with nnunetv2, sample body locations.

The order is nnU-Net's ``DefaultPreprocessor.run_case_npy``: crop -> normalize -> resample (normalizing first keeps the
clipped CT range intact under cubic interpolation). Unlike nnU-Net there is no axis transpose: data stays (Z, Y, X).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape, resample_data_or_seg_to_shape

from nnssl.config.enums import Normalization
from nnssl.config.plans import Plans
from nnssl.data.dataset import BODY_LOCATIONS_KEY
from nnssl.data.raw_dataset import RawCase, read_case
from nnssl.planning.body_mask import bbox_slices, body_bbox
from nnssl.planning.fingerprint import case_body_mask
from nnssl.preprocessing.normalization import normalize

# nnU-Net 3d_fullres resampling (ExperimentPlanner.determine_resampling): cubic in-plane, nearest along an anisotropic
# axis, separate-z decided from the spacings.
DATA_RESAMPLING: dict[str, Any] = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
# nnU-Net resamples segmentations with order 1 per label and takes the argmax; for a binary mask that is the linear
# interpolation of the mask thresholded at one half, done here in one pass.
MASK_RESAMPLING: dict[str, Any] = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
MASK_THRESHOLD = 0.5
# Body voxel coordinates stored per case for body-biased crops (nnU-Net stores 10,000 per foreground class).
NUM_BODY_LOCATIONS = 10_000
BODY_LOCATIONS_SEED = 1234
# Rejection sampling draws this many times more candidates than the body fraction predicts it needs.
OVERSAMPLING = 1.5


def sample_body_locations(mask: np.ndarray, num: int = NUM_BODY_LOCATIONS,
                          seed: int = BODY_LOCATIONS_SEED) -> np.ndarray:
    """Up to ``num`` distinct body voxel coordinates, uniformly and reproducibly drawn.

    Rejection-samples flat indices instead of listing every body voxel (``np.argwhere`` of a large body would
    need 24 bytes per voxel).

    Args:
        mask: bool body mask, (Z, Y, X).
        num: how many locations at most.
        seed: RNG seed.

    Returns:
        int64 coordinates (z, y, x), (K, 3) with K = min(num, body voxels).
    """
    flat = np.ascontiguousarray(mask).ravel()  # (Z*Y*X,)
    total = int(np.count_nonzero(flat))
    if total <= num:
        return np.argwhere(mask).astype(np.int64)  # (total, 3)
    rng = np.random.default_rng(seed)
    fraction = total / flat.size
    chosen = np.empty(0, dtype=np.int64)
    while chosen.size < num:
        draw = int(np.ceil((num - chosen.size) / fraction * OVERSAMPLING))
        candidates = rng.integers(0, flat.size, size=draw)  # (draw,)
        chosen = np.unique(np.concatenate([chosen, candidates[flat[candidates]]]))
    chosen = rng.choice(chosen, size=num, replace=False)  # np.unique sorted them; pick a random subset
    return np.stack(np.unravel_index(chosen, mask.shape), axis=1).astype(np.int64)  # (num, 3)


def resample_case(data: np.ndarray, mask: np.ndarray, spacing: Sequence[float],
                  target_spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Resample image and body mask to ``target_spacing`` with nnunetv2's functions.

    Args:
        data: float32 image, (C, Z, Y, X).
        mask: bool body mask, (Z, Y, X).
        spacing: current spacing (Z, Y, X) mm.
        target_spacing: planned spacing (Z, Y, X) mm.

    Returns:
        Image float32 (C, Z', Y', X') and bool mask (Z', Y', X') with (Z', Y', X') = round(shape * spacing / target).
    """
    new_shape = compute_new_shape(data.shape[1:], spacing, target_spacing)
    if tuple(new_shape) == tuple(data.shape[1:]):
        return data, mask
    data = resample_data_or_seg_to_shape(data, new_shape, spacing, target_spacing, **DATA_RESAMPLING)
    mask = resample_data_or_seg_to_shape(mask[None].astype(np.float32), new_shape, spacing, target_spacing,
                                         **MASK_RESAMPLING)[0] > MASK_THRESHOLD  # (Z', Y', X')
    return data.astype(np.float32, copy=False), mask


def preprocess_case(case: RawCase, plans: Plans) -> tuple[np.ndarray, np.ndarray, dict]:
    """Preprocess one raw case as the plans say.

    Args:
        case: the raw case.
        plans: the plans.

    Returns:
        ``(data, body_mask, properties)``: normalized float32 (C, Z, Y, X); int8 (1, Z, Y, X) with 1 = body; nnU-Net's
        properties (``spacing``, reader geometry, ``shape_before_cropping``, ``bbox_used_for_cropping``,
        ``shape_after_cropping_and_before_resampling``) plus ``body_locations`` (K, 3) int64 in the output grid.
    """
    data, properties = read_case(case)  # (C, Z, Y, X)
    mask = case_body_mask(data, str(case.files[0]), hounsfield=plans.normalization == Normalization.CT)  # (Z, Y, X)
    bbox = body_bbox(mask)
    crop = bbox_slices(bbox)
    properties["shape_before_cropping"] = tuple(data.shape[1:])
    data = np.ascontiguousarray(data[(slice(None), *crop)])  # (C, Zc, Yc, Xc)
    mask = np.ascontiguousarray(mask[crop])  # (Zc, Yc, Xc)
    properties["bbox_used_for_cropping"] = bbox
    properties["shape_after_cropping_and_before_resampling"] = tuple(data.shape[1:])
    data = normalize(data, plans)
    data, mask = resample_case(data, mask, properties["spacing"], plans.spacing)  # (C, Z', Y', X'), (Z', Y', X')
    properties[BODY_LOCATIONS_KEY] = sample_body_locations(mask)  # (K, 3)
    return data, mask[None].astype(np.int8), properties  # (C, Z', Y', X'), (1, Z', Y', X')
