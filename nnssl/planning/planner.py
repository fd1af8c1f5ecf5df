"""Fingerprint -> ``nnsslPlans.json``: spacing, normalization, patch sizes and the reasons for each.

Pure: numbers in, :class:`~nnssl.config.plans.Plans` out; file handling is in :func:`plan_experiment`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

from nnssl.config.enums import Normalization, look_up_option
from nnssl.config.plans import DEFAULT_PLANS_NAME, Plans
from nnssl.data.dataset import plans_file
from nnssl.planning.body_mask import BODY_THRESHOLD_HU
from nnssl.planning.fingerprint import DatasetFingerprint
from nnssl.planning.patch_size import default_patch_size, downstream_patch_size, override_patch_size
from nnssl.planning.spacing import median_target_spacing, override_spacing

# Cases listed by name in a decision before the rest are only counted.
MAX_NAMED_CASES = 5


@dataclass(frozen=True)
class NormalizationDecision:
    """The intensity scheme and the reason sentence for the plans' ``decisions``."""

    normalization: Normalization
    reason: str


def choose_normalization(fingerprint: DatasetFingerprint, override: str | None = None) -> NormalizationDecision:
    """CT normalization if the data looks like CT, else per-image z-score.

    Looks like CT: one channel, every case has negative values (HU: fat and air are negative; MR, PET and unshifted
    CT have none) and at least one case shows air (below -500 HU).

    Args:
        fingerprint: the dataset fingerprint.
        override: ``"ct"`` or ``"zscore"`` to force a scheme (``--normalization``).

    Returns:
        The decision.
    """
    stats = fingerprint.intensity_stats
    if override is not None:
        scheme = Normalization(look_up_option(override, [str(n) for n in Normalization], "normalization"))
        return NormalizationDecision(scheme, f"normalization {scheme} was set by the user (--normalization).")
    cases = fingerprint.cases
    channel_name = fingerprint.channel_names.get("0", "?")
    body_range = (f"body intensities {stats.percentile_00_5:.0f}..{stats.percentile_99_5:.0f} "
                  f"(0.5/99.5 percentiles), mean {stats.mean:.1f}, std {stats.std:.1f}")
    if len(fingerprint.channel_names) > 1:
        return NormalizationDecision(Normalization.ZSCORE, f"normalization zscore (per image and channel): the data "
                                     f"has {len(fingerprint.channel_names)} channels and CT normalization is planned "
                                     "for single-channel CT only.")
    not_hu = [c.identifier for c in cases if not c.has_negative_values]
    with_air = [c for c in cases if c.has_air]
    if not not_hu and with_air:
        return NormalizationDecision(Normalization.CT, (
            f"normalization ct (nnU-Net's CTNormalization): every case has negative values and {len(with_air)} of "
            f"{len(cases)} show air below {BODY_THRESHOLD_HU:g} HU, so the data is CT in HU "
            f"(channel '{channel_name}'); "
            f"clip to the body's 0.5/99.5 percentiles {stats.percentile_00_5:.0f}/{stats.percentile_99_5:.0f} HU "
            f"and z-score with the body's mean {stats.mean:.1f} and std {stats.std:.1f} HU."))
    if not_hu:
        named = ", ".join(not_hu[:MAX_NAMED_CASES]) + (" ..." if len(not_hu) > MAX_NAMED_CASES else "")
        why = (f"{len(not_hu)} of {len(cases)} cases have no negative values ({named}), which CT in HU always has "
               "(air, fat); this looks like MR/PET or CT without the HU offset")
    else:
        why = f"no case shows air below {BODY_THRESHOLD_HU:g} HU"
    hint = " even though dataset.json calls the channel CT" if channel_name.upper() == "CT" else ""
    return NormalizationDecision(Normalization.ZSCORE, (
        f"normalization zscore (per image) instead of ct{hint}: {why}; {body_range}. "
        "Force CT normalization with --normalization ct if the data is CT."))


def median_resampled_shape(fingerprint: DatasetFingerprint, spacing: Sequence[float]) -> tuple[int, int, int]:
    """Median over cases of the body-box shape after resampling to ``spacing`` (nnunetv2's ``compute_new_shape``)."""
    shapes = [compute_new_shape(c.shape_after_crop, c.spacing, spacing) for c in fingerprint.cases]  # N x (3,)
    z, y, x = (int(round(v)) for v in np.median(np.vstack(shapes), axis=0))
    return z, y, x


def plan(fingerprint: DatasetFingerprint, spacing: Sequence[float] | None = None,
         patch_size: Sequence[int] | None = None, normalization: str | None = None,
         plans_name: str = DEFAULT_PLANS_NAME) -> Plans:
    """Plan pretraining from a fingerprint.

    Args:
        fingerprint: the dataset fingerprint.
        spacing: override of the target spacing, (Z, Y, X) mm.
        patch_size: override of the pretraining patch size, (Z, Y, X); each a multiple of ``PATCH_GRID``.
        normalization: override of the intensity scheme (``ct``/``zscore``).
        plans_name: the plans identifier (file ``<plans_name>.json``, data folder ``<plans_name>_3d``).

    Returns:
        The plans, with one ``decisions`` sentence per planned value.
    """
    spacings = fingerprint.spacings  # (N, 3)
    spacing_decision = (override_spacing(spacing) if spacing is not None
                        else median_target_spacing(spacings, fingerprint.shapes_after_crop))
    median_shape = median_resampled_shape(fingerprint, spacing_decision.spacing)
    patch_decision = (override_patch_size(patch_size) if patch_size is not None
                      else default_patch_size(median_shape))
    downstream = downstream_patch_size(patch_decision.patch_size)
    norm = choose_normalization(fingerprint, normalization)
    oz, oy, ox = (float(v) for v in np.median(spacings, axis=0))
    reader = (f"images are read with nnunetv2's {fingerprint.image_reader_writer} ({fingerprint.file_ending}) and "
              f"stored as nnU-Net 2.8 blosc2 (nnUNetDatasetBlosc2), cropped to the body box, median shape after "
              f"resampling {'x'.join(map(str, median_shape))}.")
    return Plans(
        dataset_name=fingerprint.dataset_name,
        spacing=spacing_decision.spacing,
        normalization=norm.normalization,
        intensity_stats=fingerprint.intensity_stats,
        patch_size=patch_decision.patch_size,
        downstream_patch_size=downstream.patch_size,
        median_shape=median_shape,
        original_median_spacing=(oz, oy, ox),
        image_reader_writer=fingerprint.image_reader_writer,
        num_input_channels=len(fingerprint.channel_names),
        plans_name=plans_name,
        decisions=(spacing_decision.reason, norm.reason, patch_decision.reason, downstream.reason, reader),
    )


def plan_experiment(fingerprint: DatasetFingerprint, preprocessed_dataset: Path,
                    spacing: Sequence[float] | None = None, patch_size: Sequence[int] | None = None,
                    normalization: str | None = None, plans_name: str = DEFAULT_PLANS_NAME) -> Plans:
    """Plan and save ``<plans_name>.json`` (atomically) beside the fingerprint.

    Args:
        fingerprint: the dataset fingerprint.
        preprocessed_dataset: ``nnssl_preprocessed/DatasetXXX_Name``.
        spacing: see :func:`plan`.
        patch_size: see :func:`plan`.
        normalization: see :func:`plan`.
        plans_name: see :func:`plan`.

    Returns:
        The saved plans.
    """
    plans = plan(fingerprint, spacing, patch_size, normalization, plans_name)
    plans.save(plans_file(preprocessed_dataset, plans.plans_name))
    return plans
