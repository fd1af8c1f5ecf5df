"""Checks that one raw CT image (array or file) is usable before nnunetv2 sees it.

nnunetv2 2.8.1 silently accepts NaN/inf voxels, constant images and truncated files. Worse, SimpleITK's NIfTI reader
hides two of these problems from any array check: it reads missing (truncated) voxels as zeros, and niftilib
replaces NaN/inf voxels with 0 while loading. So NIfTI files are also checked at the file level, with nibabel.
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
    _check_finite(data, source)
    low, high = data.min(), data.max()
    if low == high:
        raise NnsslError(f"{source}: is a constant image (every voxel = {low}); it holds no anatomy, remove it")


def _check_finite(data: np.ndarray, source: str) -> None:
    if not np.issubdtype(data.dtype, np.floating):
        return  # integer voxels cannot be NaN/inf
    finite = np.isfinite(data)
    if not finite.all():
        n_bad = int(finite.size - np.count_nonzero(finite))
        raise NnsslError(f"{source}: contains {n_bad} NaN/inf voxel(s); replace them (e.g. with the air value "
                         f"-1024 HU) or remove this file")


def _check_nifti_file(path: Path) -> None:
    """NIfTI: the (decompressed) file holds every voxel the header promises, and float voxels are finite."""
    try:
        proxy = nibabel.load(path).dataobj
    except Exception as err:  # nibabel raises many types for a broken header
        raise NnsslError(f"{path}: cannot read the NIfTI header, the file is cut off or not NIfTI ({err}); "
                         f"copy or export it again, or remove it") from None
    expected = int(proxy.offset) + int(np.prod(proxy.shape)) * proxy.dtype.itemsize
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
    if np.issubdtype(proxy.dtype, np.floating):
        _check_finite(np.asanyarray(proxy.get_unscaled()), str(path))


# file ending -> file-level check; other formats' readers fail on truncated data and keep NaN voxels
_FILE_CHECKS: dict[str, Callable[[Path], None]] = {
    ".nii.gz": _check_nifti_file,
    ".nii": _check_nifti_file,
}


def check_image_file(path: Path) -> None:
    """Raise for file problems an array check cannot see after SimpleITK has read the file.

    Raises:
        NnsslError: the file is truncated, its compression stream is corrupt, or (NIfTI) it holds NaN/inf voxels
            that the reader would turn into zeros.
    """
    path = Path(path)
    name = path.name.lower()
    for ending, check in _FILE_CHECKS.items():
        if name.endswith(ending):
            check(path)
            return
