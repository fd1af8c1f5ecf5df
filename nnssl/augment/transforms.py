"""Light pretraining augmentation from batchgeneratorsv2: small rotation/scaling, flips, intensity scale and shift.

Masked-image-modelling methods learn from the image itself, so the augmentation stays mild (MAE uses only crops and
flips); strong intensity changes would make the reconstruction target arbitrary. The values below are the defaults of
:func:`build_pretraining_transforms` and are named so the recipe is visible in one place.
"""
from __future__ import annotations

import math

from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.brightness import (
    BrightnessAdditiveTransform,
    MultiplicativeBrightnessTransform,
)
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform

P_ROTATION = 0.2
MAX_ROTATION_RAD = math.radians(15)
P_SCALING = 0.2
SCALING_RANGE = (0.85, 1.15)
P_INTENSITY_SCALE = 0.3
INTENSITY_SCALE_RANGE = (0.9, 1.1)
P_INTENSITY_SHIFT = 0.3
INTENSITY_SHIFT_SIGMA = 0.1  # in units of the normalized intensity (one dataset std for CT normalization)
MIRROR_AXES = (0, 1, 2)


def build_pretraining_transforms(patch_size: tuple[int, int, int]) -> BasicTransform:
    """Per-sample transform ``t(image=Tensor (C, Z, Y, X)) -> {"image": Tensor (C, Z, Y, X)}``.

    The crop already has ``patch_size``; ``SpatialTransform`` rotates/scales about its centre and keeps the size,
    filling the corners from the border (``padding_mode_image="border"``: background stays air, not 0 = mean HU).
    """
    return ComposeTransforms([
        SpatialTransform(
            patch_size=tuple(patch_size),
            patch_center_dist_from_border=0,
            random_crop=False,
            p_rotation=P_ROTATION,
            rotation=(-MAX_ROTATION_RAD, MAX_ROTATION_RAD),
            p_scaling=P_SCALING,
            scaling=SCALING_RANGE,
            p_synchronize_scaling_across_axes=1,
            padding_mode_image="border",
        ),
        MirrorTransform(allowed_axes=MIRROR_AXES),
        RandomTransform(MultiplicativeBrightnessTransform(multiplier_range=INTENSITY_SCALE_RANGE,
                                                          synchronize_channels=False), P_INTENSITY_SCALE),
        RandomTransform(BrightnessAdditiveTransform(mu=0.0, sigma=INTENSITY_SHIFT_SIGMA, synchronize_channels=False),
                        P_INTENSITY_SHIFT),
    ])
