"""Target spacing: the per-axis median, with nnU-Net's rule for anisotropic datasets.

This is the rule of nnU-Net v2's ``ExperimentPlanner.determine_fullres_target_spacing`` written as a pure function of
the fingerprint numbers, so it can be tested alone and against the installed nnunetv2 (parity test).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from nnunetv2.configuration import ANISO_THRESHOLD

from nnssl.errors import NnsslError

MEDIAN_PERCENTILE = 50
# Anisotropic datasets take this percentile of the low-resolution axis instead of the median (nnU-Net).
ANISOTROPIC_AXIS_PERCENTILE = 10
# nnU-Net nudges the low-res spacing just above the in-plane spacing when the percentile falls below it.
ANISOTROPY_TIE_BREAK = 1e-5
AXIS_NAMES = ("Z", "Y", "X")


@dataclass(frozen=True)
class SpacingDecision:
    """The planned spacing and why.

    Attributes:
        spacing: target spacing in mm, (Z, Y, X).
        reason: one human-readable sentence for the plans' ``decisions``.
        anisotropic_axis: index of the axis that got the anisotropic rule, else None.
    """

    spacing: tuple[float, float, float]
    reason: str
    anisotropic_axis: int | None = None


def median_target_spacing(
    spacings: Sequence[Sequence[float]] | np.ndarray,
    shapes: Sequence[Sequence[int]] | np.ndarray,
    anisotropy_threshold: float = ANISO_THRESHOLD,
) -> SpacingDecision:
    """Median spacing per axis; for anisotropic data, the 10th percentile of the low-resolution axis.

    The anisotropic rule applies only when BOTH the median spacing is anisotropic (worst axis more than
    ``anisotropy_threshold`` times the coarsest other axis) AND the median shape has that many times fewer voxels
    along it than along the others. The result is never finer than the other axes' coarsest spacing.

    Args:
        spacings: per-case spacing in mm, (N, 3) in (Z, Y, X).
        shapes: per-case shape after cropping, (N, 3) in (Z, Y, X).
        anisotropy_threshold: nnU-Net's ``ANISO_THRESHOLD``.

    Returns:
        The decision with spacing (Z, Y, X) and a reason sentence.
    """
    spacings = np.asarray(spacings, dtype=np.float64).reshape(-1, 3)  # (N, 3)
    shapes = np.asarray(shapes, dtype=np.float64).reshape(-1, 3)  # (N, 3)
    target = np.percentile(spacings, MEDIAN_PERCENTILE, axis=0)  # (3,)
    median_shape = np.percentile(shapes, MEDIAN_PERCENTILE, axis=0)  # (3,)

    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    coarsest_other = max(target[i] for i in others)
    aniso_spacing = target[worst] > anisotropy_threshold * coarsest_other
    aniso_voxels = median_shape[worst] * anisotropy_threshold < min(median_shape[i] for i in others)
    median_text = "x".join(f"{v:.4g}" for v in target)
    if not (aniso_spacing and aniso_voxels):
        fewest_other = min(median_shape[i] for i in others)
        why = (f"no axis is more than {anisotropy_threshold:g}x coarser than the others" if not aniso_spacing
               else f"axis {AXIS_NAMES[worst]} is {target[worst] / coarsest_other:.2f}x coarser than the others but "
                    f"its median {median_shape[worst]:.0f} voxels are not {anisotropy_threshold:g}x fewer than the "
                    f"other axes' {fewest_other:.0f}")
        return SpacingDecision(_as_tuple(target),
                               f"spacing {median_text} mm (Z x Y x X) is the median over {len(spacings)} cases; "
                               f"nnU-Net's anisotropy rule does not apply because {why}.")

    low_res = float(np.percentile(spacings[:, worst], ANISOTROPIC_AXIS_PERCENTILE))
    if low_res < coarsest_other:
        low_res = max(coarsest_other, low_res) + ANISOTROPY_TIE_BREAK
    median_worst = target[worst]
    target[worst] = low_res
    return SpacingDecision(
        _as_tuple(target),
        f"spacing {'x'.join(f'{v:.4g}' for v in target)} mm (Z x Y x X): median per axis, except axis "
        f"{AXIS_NAMES[worst]} whose median {median_worst:.4g} mm is > {anisotropy_threshold:g}x the others with "
        f"> {anisotropy_threshold:g}x fewer voxels, so nnU-Net's anisotropy rule takes its "
        f"{ANISOTROPIC_AXIS_PERCENTILE}th percentile ({low_res:.4g} mm) to avoid interpolating few thick slices.",
        anisotropic_axis=worst,
    )


def override_spacing(spacing: Sequence[float]) -> SpacingDecision:
    """A user-given spacing (``--spacing Z Y X``), validated.

    Raises:
        NnsslError: not three positive numbers.
    """
    values = tuple(float(v) for v in spacing)
    if len(values) != 3 or not all(np.isfinite(values)) or min(values) <= 0:
        raise NnsslError(f"--spacing needs three positive numbers Z Y X in mm, got {list(spacing)}")
    return SpacingDecision(_as_tuple(values), f"spacing {'x'.join(f'{v:.4g}' for v in values)} mm (Z x Y x X) "
                                              "was set by the user (--spacing).")


def _as_tuple(values: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    z, y, x = (float(v) for v in values)
    return z, y, x
