"""Body mask of a CT image: above -500 HU, holes filled slice by slice, opened, largest connected component.

Unlabeled CT has no foreground label, so the body stands in for nnU-Net's foreground: intensity statistics are sampled
inside it, images are cropped to its box, and crops are biased toward it. Non-CT images use nnU-Net's nonzero mask.
"""
from __future__ import annotations

import cc3d
import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice, get_bbox_from_mask
from nnunetv2.preprocessing.cropping.cropping import create_nonzero_mask
from scipy.ndimage import binary_dilation, binary_erosion, binary_fill_holes, generate_binary_structure

from nnssl.errors import NnsslError

# Air is about -1000 HU and soft tissue about 0 HU; -500 separates body (and table) from air robustly.
BODY_THRESHOLD_HU = -500.0
# Face connectivity keeps the patient separate from a table that touches it only along an edge.
BODY_CONNECTIVITY = 6
# In-plane erosion steps before picking the largest component: breaks the thin contact between patient and table, then
# the same number of dilation steps (inside the filled threshold mask) restores the body's outline.
BODY_OPENING_STEPS = 2
_IN_PLANE_CROSS = np.zeros((1, 3, 3), dtype=bool)
_IN_PLANE_CROSS[0] = generate_binary_structure(2, 1)


def ct_body_mask(image: np.ndarray, source: str, threshold: float = BODY_THRESHOLD_HU) -> np.ndarray:
    """Body mask of one CT channel.

    Thresholds at ``threshold`` HU and fills holes in every axial slice, so the lungs and airways (air inside the body)
    belong to the body even where the trachea leaves the volume; then opens in-plane (so a table touching the patient
    detaches) and keeps the largest connected component.

    Args:
        image: CT in HU, (Z, Y, X).
        source: file or case name for the error message.
        threshold: HU above which a voxel may be body.

    Returns:
        Bool mask, (Z, Y, X).

    Raises:
        NnsslError: no voxel above ``threshold`` (the image holds no body).
    """
    above = image > threshold  # (Z, Y, X)
    if not above.any():
        raise NnsslError(f"{source}: no voxel above {threshold:g} HU, so no body was found; remove this image or check "
                         "that it is CT in Hounsfield units")
    filled = np.empty_like(above)  # (Z, Y, X)
    for z in range(above.shape[0]):
        filled[z] = binary_fill_holes(above[z])
    eroded = binary_erosion(filled, _IN_PLANE_CROSS, iterations=BODY_OPENING_STEPS)  # (Z, Y, X)
    if not eroded.any():  # a body thinner than the opening: skip the opening
        return cc3d.largest_k(filled, k=1, connectivity=BODY_CONNECTIVITY) > 0  # (Z, Y, X)
    core = cc3d.largest_k(eroded, k=1, connectivity=BODY_CONNECTIVITY) > 0  # (Z, Y, X)
    return binary_dilation(core, _IN_PLANE_CROSS, iterations=BODY_OPENING_STEPS, mask=filled)  # (Z, Y, X)


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """nnU-Net's nonzero mask (any channel nonzero, holes filled), for non-CT data.

    Args:
        data: image, (C, Z, Y, X).

    Returns:
        Bool mask, (Z, Y, X).
    """
    return create_nonzero_mask(data)


def body_bbox(mask: np.ndarray) -> list[list[int]]:
    """Half-open bounding box ``[[z0, z1], [y0, y1], [x0, x1]]`` of a mask (acvl_utils / nnU-Net convention)."""
    return get_bbox_from_mask(mask)


def bbox_slices(bbox: list[list[int]]) -> tuple[slice, slice, slice]:
    """The box as slices for (Z, Y, X) indexing."""
    z, y, x = bounding_box_to_slice(bbox)
    return z, y, x
