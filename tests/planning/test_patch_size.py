"""Pretraining patch size: the encoder grid, the default rule and the override's error."""
from __future__ import annotations

import pytest

from nnssl.errors import NnsslError
from nnssl.planning.patch_size import (
    PATCH_GRID,
    SWIN_DOWNSAMPLING,
    VIT_TOKEN_SIZE,
    default_patch_size,
    downstream_patch_size,
    round_to_grid,
    validate_patch_size,
)


def test_grid_is_a_multiple_of_every_encoder_grid():
    assert PATCH_GRID == 32
    assert PATCH_GRID % VIT_TOKEN_SIZE == 0 and PATCH_GRID % SWIN_DOWNSAMPLING == 0


@pytest.mark.parametrize("length,expected", [(62, 64), (47, 32), (48, 64), (10, 32), (150, 160), (500, 512)])
def test_round_to_grid(length, expected):
    assert round_to_grid(length) == expected


@pytest.mark.parametrize("median_shape,expected", [
    ((59, 150, 173), (64, 160, 160)),  # Sarcoma-like: thick slices, capped in-plane
    ((300, 400, 400), (160, 160, 160)),  # large: the 160^3 cap
    ((10, 20, 20), (32, 32, 32)),  # tiny: one grid step
    ((100, 90, 70), (96, 96, 64)),
])
def test_default_patch_size(median_shape, expected):
    decision = default_patch_size(median_shape)
    assert decision.patch_size == expected
    assert all(v % PATCH_GRID == 0 for v in decision.patch_size)
    assert "x".join(map(str, expected)) in decision.reason


def test_downstream_is_the_pretraining_patch():
    assert downstream_patch_size((64, 160, 160)).patch_size == (64, 160, 160)


def test_valid_override_passes():
    assert validate_patch_size([96, 128, 160]) == (96, 128, 160)


def test_invalid_override_names_the_nearest_valid_sizes():
    with pytest.raises(NnsslError) as err:
        validate_patch_size([100, 160, 150])
    message = str(err.value)
    assert "Z=100 (nearest valid: 96 or 128)" in message
    assert "X=150 (nearest valid: 128 or 160)" in message
    assert "--patch-size 96 160 160" in message
    assert "Y=" not in message


def test_override_needs_three_values():
    with pytest.raises(NnsslError, match="three numbers"):
        validate_patch_size([64, 64])
