"""Tiny synthetic CT volumes (HU) and raw datasets for planning/preprocessing tests, written in milliseconds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

AIR_HU = -1000
TISSUE_HU = 40
LUNG_HU = -850
BONE_HU = 700
TABLE_HU = 300


def ct_volume(shape: tuple[int, int, int] = (10, 40, 48), seed: int = 0, table: bool = False) -> np.ndarray:
    """A body cylinder (soft tissue, two lungs, a bone) in air, optionally on a table touching it; int16 (Z, Y, X)."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, y), np.linspace(-1, 1, x), indexing="ij")  # (Y, X)
    body = (yy / 0.7) ** 2 + (xx / 0.8) ** 2 < 1
    lungs = ((yy + 0.1) / 0.3) ** 2 + ((np.abs(xx) - 0.35) / 0.2) ** 2 < 1
    bone = (yy - 0.5) ** 2 + xx**2 < 0.01
    image = np.full(shape, AIR_HU, dtype=np.float32)
    image[:, body] = TISSUE_HU
    image[:, lungs & body] = LUNG_HU
    image[:, bone & body] = BONE_HU
    if table:
        table_rows = slice(int(y * 0.86), int(y * 0.92))
        image[:, table_rows, :] = TABLE_HU  # a slab spanning the whole width, touching the body's bottom edge
    image += rng.normal(0, 5, shape).astype(np.float32)
    return np.round(image).astype(np.int16)


def write_image(path: Path, array: np.ndarray, spacing_zyx: tuple[float, float, float]) -> Path:
    """Write a (Z, Y, X) array as NIfTI with the given spacing (SimpleITK takes X, Y, Z)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def write_raw_dataset(root: Path, name: str, cases: dict[str, tuple[np.ndarray, tuple[float, float, float]]],
                      channel_name: str = "CT") -> Path:
    """Write ``root/<name>/{dataset.json, imagesTr/<case>_0000.nii.gz}``; return the dataset folder."""
    folder = root / name
    for identifier, (array, spacing) in cases.items():
        write_image(folder / "imagesTr" / f"{identifier}_0000.nii.gz", array, spacing)
    meta = {"channel_names": {"0": channel_name}, "file_ending": ".nii.gz", "numTraining": len(cases)}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def default_cases() -> dict[str, tuple[np.ndarray, tuple[float, float, float]]]:
    """Three small CT cases with different spacings and shapes."""
    return {
        "ct_a": (ct_volume((10, 40, 48), seed=0), (3.0, 1.0, 1.0)),
        "ct_b": (ct_volume((12, 36, 40), seed=1), (2.5, 1.2, 1.2)),
        "ct_c": (ct_volume((8, 44, 44), seed=2, table=True), (3.0, 0.9, 0.9)),
    }
