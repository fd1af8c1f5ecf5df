"""Target spacing: hand-computed cases and parity with nnunetv2's ExperimentPlanner on the same numbers."""
from __future__ import annotations

import numpy as np
import pytest
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

from nnssl.errors import NnsslError
from nnssl.planning.spacing import median_target_spacing, override_spacing


def _nnunet_target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """nnunetv2's own rule on a fingerprint holding only these numbers (its __init__ needs a dataset on disk)."""
    planner = object.__new__(ExperimentPlanner)
    planner.overwrite_target_spacing = None
    planner.anisotropy_threshold = 3
    planner.dataset_fingerprint = {"spacings": spacings.tolist(), "shapes_after_crop": shapes.tolist()}
    return planner.determine_fullres_target_spacing()


def test_isotropic_is_the_median_per_axis():
    spacings = [(1.0, 0.8, 0.8), (2.0, 0.7, 0.7), (1.5, 0.9, 0.9)]
    shapes = [(100, 200, 200)] * 3
    decision = median_target_spacing(spacings, shapes)
    assert decision.spacing == pytest.approx((1.5, 0.8, 0.8))
    assert decision.anisotropic_axis is None
    assert "median" in decision.reason


def test_anisotropic_spacing_and_voxels_take_the_10th_percentile():
    # median Z spacing 5 > 3 * 1, and median Z voxels 20 * 3 < 256: nnU-Net's rule applies to Z.
    spacings = [(5.0, 1.0, 1.0), (5.0, 1.0, 1.0), (5.0, 1.0, 1.0), (4.0, 1.0, 1.0), (3.5, 1.0, 1.0)]
    shapes = [(20, 256, 256)] * 5
    decision = median_target_spacing(spacings, shapes)
    # 10th percentile of [3.5, 4, 5, 5, 5] with linear interpolation: 3.5 + 0.4 * (4 - 3.5) = 3.7
    assert decision.spacing == pytest.approx((3.7, 1.0, 1.0))
    assert decision.anisotropic_axis == 0
    assert "10th percentile" in decision.reason


def test_anisotropic_spacing_with_many_slices_keeps_the_median():
    # Sarcoma-like: 3.27 mm slices are > 3x the in-plane 0.98 mm, but 62 slices * 3 is not < 180 voxels in-plane.
    spacings = [(3.27, 0.977, 0.977)] * 4
    shapes = [(62, 180, 186)] * 4
    decision = median_target_spacing(spacings, shapes)
    assert decision.spacing == pytest.approx((3.27, 0.977, 0.977))
    assert decision.anisotropic_axis is None


def test_low_percentile_never_goes_below_the_in_plane_spacing():
    # 10th percentile of Z = [1, 1, 6, 6, 6] is 1.0 < 1.5 in-plane: nnU-Net nudges it just above 1.5.
    spacings = [(1.0, 1.5, 1.5), (1.0, 1.5, 1.5), (6.0, 1.5, 1.5), (6.0, 1.5, 1.5), (6.0, 1.5, 1.5)]
    shapes = [(10, 300, 300)] * 5
    decision = median_target_spacing(spacings, shapes)
    assert decision.spacing[0] == pytest.approx(1.5 + 1e-5)


def _random_fingerprints() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    cases = []
    for anisotropic in (False, True):
        for n in (1, 3, 8, 25):
            in_plane = rng.uniform(0.5, 1.5, (n, 1))
            z = rng.uniform(3, 8, (n, 1)) if anisotropic else rng.uniform(0.5, 2, (n, 1))
            spacings = np.hstack([z, in_plane, in_plane])
            zs = rng.integers(10, 40, (n, 1)) if anisotropic else rng.integers(80, 300, (n, 1))
            shapes = np.hstack([zs, rng.integers(150, 512, (n, 2))])
            cases.append((spacings, shapes))
    cases.append((np.array([[0.8, 0.8, 5.0], [0.8, 0.8, 6.0]]), np.array([[300, 300, 20], [300, 300, 25]])))
    return cases


@pytest.mark.parametrize("spacings,shapes", _random_fingerprints())
def test_parity_with_nnunetv2_experiment_planner(spacings, shapes):
    ours = median_target_spacing(spacings, shapes).spacing
    theirs = _nnunet_target_spacing(spacings, shapes)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_parity_cases_exercise_both_branches():
    axes = {median_target_spacing(s, sh).anisotropic_axis for s, sh in _random_fingerprints()}
    assert None in axes and axes - {None}, "the parity cases must cover the anisotropic rule and the plain median"


def test_override_is_validated():
    assert override_spacing([2, 1, 1]).spacing == (2.0, 1.0, 1.0)
    with pytest.raises(NnsslError, match="three positive numbers"):
        override_spacing([2, 0, 1])
