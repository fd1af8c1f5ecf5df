"""A tiny preprocessed dataset in nnssl's layout (nnU-Net 2.8 blosc2 + body_locations), written in under a second.

Imported by path (``load_tiny_data``) from tests/training/conftest.py and tests/cli/test_pretrain.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

from nnssl.config.enums import Normalization
from nnssl.config.plans import Plans

DATASET = "Dataset990_TinyBody"
SHAPES = ((40, 44, 48), (28, 36, 36), (48, 40, 40))  # one case smaller than a 32^3 patch on Z


def _case(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    body = (zz / 0.9) ** 2 + (yy / 0.8) ** 2 + (xx / 0.7) ** 2 < 1
    image = np.where(body, 0.5, -2.0).astype(np.float32)
    for _ in range(4):  # a few bright blobs ("organs") so crops differ
        center = rng.uniform(-0.5, 0.5, 3)
        blob = ((zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2) < rng.uniform(0.02, 0.06)
        image[blob & body] = rng.uniform(1.0, 2.5)
    image += rng.normal(0, 0.05, shape).astype(np.float32)
    return image[None], body[None].astype(np.int8)


def write_tiny_preprocessed(root: Path, shapes: tuple[tuple[int, int, int], ...] = SHAPES) -> Path:
    """Write ``root/Dataset990_TinyBody/{nnsslPlans.json, nnsslPlans_3d/}``; return the dataset folder."""
    rng = np.random.default_rng(0)
    dataset = root / DATASET
    data_folder = dataset / "nnsslPlans_3d"
    data_folder.mkdir(parents=True)
    for i, shape in enumerate(shapes):
        image, body = _case(shape, rng)
        locations = np.argwhere(body[0])
        locations = locations[rng.choice(len(locations), min(len(locations), 500), replace=False)].astype(np.int64)
        properties = {"spacing": [1.0, 1.0, 1.0], "shape_before_cropping": shape, "body_locations": locations}
        nnUNetDatasetBlosc2.save_case(image, body, properties, str(data_folder / f"case_{i:03d}"),
                                      chunks=(1, 16, 16, 16), blocks=(1, 8, 8, 8))
    Plans(dataset_name=DATASET, spacing=(1.0, 1.0, 1.0), normalization=Normalization.ZSCORE, intensity_stats=None,
          patch_size=(32, 32, 32), downstream_patch_size=(32, 32, 32), median_shape=(40, 40, 40),
          original_median_spacing=(1.0, 1.0, 1.0)).save(dataset / "nnsslPlans.json")
    return dataset

