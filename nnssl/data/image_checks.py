"""Checks that one raw CT image (array or file) is usable before nnunetv2 sees it.

nnunetv2 2.8.1 (and SimpleITK beneath it) silently accepts NaN/inf voxels, constant images and truncated NIfTI files
(missing voxels read as zeros), so every image is checked here first.
"""
from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel
import numpy as np

from nnssl.errors import NnsslError

SPATIAL_DIMS = 3  # (Z, Y, X)
MIN_SPATIAL_SIZE = 2  # an axis of one voxel makes the image a 2D slice
GZIP_MAGIC = b"\x1f\x8b"
READ_CHUNK_BYTES = 1 << 20


def check_image_array(
    data: np.ndarray, spacing: Sequence[float], source: str, expected_channels: int | None = None
) -> None:
    """Raise if an image array cannot be used for pretraining.

    Args:
        data: image, (C, Z, Y, X).
        spacing: voxel spacing in mm, (Z, Y, X).
        source: the file (or case) the data came from, named in the error.
        expected_channels: number of channels dataset.json declares; None skips that check.

    Raises:
        NnsslError: not (C, Z, Y, X), a 2D image, channel-count mismatch, NaN/inf voxels, a constant image or a
            non-positive spacing. The message names ``source`` and the fix.
    """
    if data.ndim != SPATIAL_DIMS + 1:
        raise NnsslError(f"{source}: expected a 3D image (C, Z, Y, X), got an array of shape {tuple(data.shape)}; "
                         f"export it as a 3D volume")
    shape_zyx = tuple(int(s) for s in data.shape[1:])
    if min(shape_zyx) < MIN_SPATIAL_SIZE:
        raise NnsslError(f"{source}: is a 2D image (shape Z, Y, X = {shape_zyx}); nnssl needs 3D volumes, "
                         f"export the whole series as one 3D file or remove this file")
    if expected_channels is not None and data.shape[0] != expected_channels:
        raise NnsslError(f"{source}: has {data.shape[0]} channel(s) but {expected_channels} are expected "
                         f"(dataset.json channel_names); store one channel per _XXXX file or fix channel_names")
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    if spacing_arr.shape != (SPATIAL_DIMS,) or not np.all(np.isfinite(spacing_arr)) or np.any(spacing_arr <= 0):
        raise NnsslError(f"{source}: invalid voxel spacing {tuple(spacing_arr.tolist())} (need 3 positive values "
                         f"in mm); fix the spacing in the file header")
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        if not finite.all():
            n_bad = int(finite.size - np.count_nonzero(finite))
            raise NnsslError(f"{source}: contains {n_bad} NaN/inf voxel(s); replace them (e.g. with the air value "
                             f"-1024 HU) or remove this file")
    low, high = data.min(), data.max()
    if low == high:
        raise NnsslError(f"{source}: is a constant image (every voxel = {low}); it holds no anatomy, remove it")


def _check_nifti_complete(path: Path) -> None:
    """NIfTI: the (decompressed) file must hold header + every voxel the header promises."""
    try:
        header = nibabel.load(path).header
    except Exception as err:  # nibabel raises many types for a broken header
        raise NnsslError(f"{path}: cannot read the NIfTI header, the file is cut off or not NIfTI ({err}); "
                         f"copy or export it again, or remove it") from None
    expected = int(header.get_data_offset()) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    with open(path, "rb") as f:
        compressed = f.read(len(GZIP_MAGIC)) == GZIP_MAGIC
    if compressed:
        actual = 0
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(READ_CHUNK_BYTES):
                    actual += len(chunk)
        except (EOFError, OSError, zlib.error) as err:
            raise NnsslError(f"{path}: the gzip stream is truncated or corrupt ({err}); the file was probably cut "
                             f"off while copying, copy or export it again") from None
    else:
        actual = path.stat().st_size
    if actual < expected:
        raise NnsslError(f"{path}: is truncated ({actual} of {expected} bytes); the file was probably cut off "
                         f"while copying, copy or export it again")


# file ending -> completeness check; readers of other formats already fail on truncated data
_COMPLETENESS_CHECKS: dict[str, Callable[[Path], None]] = {
    ".nii.gz": _check_nifti_complete,
    ".nii": _check_nifti_complete,
}


def check_file_complete(path: Path) -> None:
    """Raise if ``path`` is shorter than its header says (SimpleITK would fill the gap with zeros).

    Raises:
        NnsslError: the file is truncated or its compression stream is corrupt.
    """
    path = Path(path)
    name = path.name.lower()
    for ending, check in _COMPLETENESS_CHECKS.items():
        if name.endswith(ending):
            check(path)
            return
