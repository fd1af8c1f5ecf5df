"""CT body mask: threshold, table removed, lungs filled; error when there is no body."""
from __future__ import annotations

import numpy as np
import pytest
from synthetic_ct import AIR_HU, ct_volume

from nnssl.errors import NnsslError
from nnssl.planning.body_mask import BODY_THRESHOLD_HU, body_bbox, ct_body_mask, nonzero_mask


def test_body_mask_fills_lungs_and_drops_the_table():
    image = ct_volume((4, 40, 48), table=True).astype(np.float32)  # (Z, Y, X)
    mask = ct_body_mask(image, "case.nii.gz")
    lungs = image < BODY_THRESHOLD_HU
    inside = mask & lungs
    assert inside.sum() > 100, "the lungs (air inside the body) must belong to the body"
    table_rows = slice(int(40 * 0.86), int(40 * 0.92))
    table = mask[:, table_rows]
    assert table.sum() < 0.1 * table.size, "the table touching the body must be left out (but at the contact)"
    assert not mask[:, :, :5].any() and not mask[:, :, -5:].any(), "the table's far ends must be left out"


def test_bbox_is_the_half_open_box_of_the_mask():
    mask = np.zeros((6, 10, 12), dtype=bool)
    mask[1:4, 2:7, 3:11] = True
    assert body_bbox(mask) == [[1, 4], [2, 7], [3, 11]]


def test_image_without_body_is_refused_naming_the_file():
    image = np.full((4, 8, 8), AIR_HU, dtype=np.float32)
    with pytest.raises(NnsslError, match=r"empty\.nii\.gz: no voxel above -500 HU"):
        ct_body_mask(image, "empty.nii.gz")


def test_nonzero_mask_for_non_ct():
    data = np.zeros((1, 4, 8, 8), dtype=np.float32)
    data[0, 1:3, 2:6, 2:6] = 100
    np.testing.assert_array_equal(nonzero_mask(data), data[0] != 0)
