"""Image and dataset checks: every bad input gives an NnsslError naming the file and the fix."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnssl.data.validate import check_image_array, check_image_file, verify_dataset
from nnssl.errors import NnsslError

SPACING_ZYX = (3.0, 1.0, 1.0)


def _ct(shape_zyx=(6, 8, 9), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 1500, size=shape_zyx).astype(np.int16)


def _write(path: Path, array: np.ndarray, spacing_xyz=(1.0, 1.0, 3.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz[: image.GetDimension()])
    sitk.WriteImage(image, str(path), True)
    return path


def test_good_array_passes():
    check_image_array(_ct()[None].astype(np.float32), SPACING_ZYX, "good.nii.gz", expected_channels=1)
    check_image_array(_ct()[None], SPACING_ZYX, "int16 is fine too")


@pytest.mark.parametrize("data, spacing, fragment", [
    (np.zeros((6, 8, 9), np.float32) + np.arange(9), SPACING_ZYX, "expected a 3D image"),  # no channel axis
    (_ct((1, 8, 9))[None], SPACING_ZYX, "2D image"),
    (_ct((6, 1, 9))[None], SPACING_ZYX, "2D image"),
    (np.stack([_ct(), _ct(seed=1)]), SPACING_ZYX, "2 channel(s) but 1 are expected"),
    (_ct()[None], (3.0, 0.0, 1.0), "invalid voxel spacing"),
    (_ct()[None], (3.0, -1.0, 1.0), "invalid voxel spacing"),
    (_ct()[None], (1.0, 1.0), "invalid voxel spacing"),
    (_ct()[None], (np.nan, 1.0, 1.0), "invalid voxel spacing"),
    (np.full((1, 6, 8, 9), -1024, np.int16), SPACING_ZYX, "constant image"),
])
def test_bad_array_is_refused_with_source_and_fix(data, spacing, fragment):
    with pytest.raises(NnsslError) as err:
        check_image_array(data, spacing, "/data/case7.nii.gz", expected_channels=1)
    message = str(err.value)
    assert message.startswith("/data/case7.nii.gz: ")
    assert fragment in message
    assert ";" in message  # the fix follows the problem


@pytest.mark.parametrize("bad_value, count", [(np.nan, 1), (np.inf, 1), (-np.inf, 2)])
def test_nan_and_inf_voxels_are_counted(bad_value, count):
    data = _ct()[None].astype(np.float32)
    data.flat[:count] = bad_value
    with pytest.raises(NnsslError, match=rf"contains {count} NaN/inf voxel"):
        check_image_array(data, SPACING_ZYX, "x.nii.gz")


def test_complete_files_pass(tmp_path, shared_data):
    check_image_file(shared_data / "fixtures" / "sts_008_crop_0000.nii.gz")
    check_image_file(_write(tmp_path / "a.nii", _ct()))
    check_image_file(_write(tmp_path / "a.nrrd", _ct()))  # not NIfTI: left to the reader


def test_real_gzip_cut_in_half_is_truncated(tmp_path, shared_data):
    original = (shared_data / "fixtures" / "sts_008_crop_0000.nii.gz").read_bytes()
    cut = tmp_path / "cut_0000.nii.gz"
    cut.write_bytes(original[: len(original) // 2])
    # SimpleITK alone reads this without complaint, zero-filling the missing half
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(cut))).shape == (32, 64, 64)
    with pytest.raises(NnsslError) as err:
        check_image_file(cut)
    assert str(cut) in str(err.value)
    assert "truncated" in str(err.value) and "copy or export it again" in str(err.value)


def test_uncompressed_nifti_cut_is_truncated(tmp_path):
    path = _write(tmp_path / "a.nii", _ct())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(NnsslError, match=r"is truncated \(\d+ of \d+ bytes\)"):
        check_image_file(path)


def test_corrupt_gzip_crc_is_refused(tmp_path):
    path = _write(tmp_path / "a.nii.gz", _ct())
    raw = bytearray(gzip.decompress(path.read_bytes()))
    compressed = bytearray(gzip.compress(bytes(raw)))
    compressed[-8] ^= 0xFF  # CRC32 of the gzip trailer
    path.write_bytes(bytes(compressed))
    with pytest.raises(NnsslError, match="truncated or corrupt"):
        check_image_file(path)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nan_voxels_in_nifti_are_found_although_simpleitk_zeroes_them(tmp_path, bad_value):
    data = _ct().astype(np.float32)
    data[2, 3, 4] = bad_value
    path = _write(tmp_path / "nan_0000.nii.gz", data)
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()  # niftilib replaced it with 0
    with pytest.raises(NnsslError, match=r"nan_0000.nii.gz: contains 1 NaN/inf voxel"):
        check_image_file(path)


def test_garbage_named_nifti_is_refused(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(b"not an image at all")
    with pytest.raises(NnsslError, match="junk.nii.gz: cannot read the NIfTI header"):
        check_image_file(path)


def _dataset(root: Path, arrays: dict[str, np.ndarray]) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    for case, array in arrays.items():
        _write(root / "imagesTr" / f"{case}_0000.nii.gz", array)
    meta = {"channel_names": {"0": "CT"}, "file_ending": ".nii.gz", "numTraining": len(arrays)}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_verify_dataset_returns_cases(tmp_path):
    folder = _dataset(tmp_path / "Dataset500_Ok", {"a": _ct(), "b": _ct(seed=2)})
    cases = verify_dataset(folder, num_processes=1)
    assert [c.identifier for c in cases] == ["a", "b"]


@pytest.mark.parametrize("num_processes", [1, 2])
def test_verify_dataset_lists_every_broken_case(tmp_path, num_processes):
    nan = _ct().astype(np.float32)
    nan[0, 0, 0] = np.nan
    folder = _dataset(tmp_path / "Dataset500_Mixed", {"good": _ct(), "nan": nan, "flat": np.zeros((6, 8, 9), np.int16),
                                                      "cut": _ct(seed=3)})
    cut = folder / "imagesTr" / "cut_0000.nii.gz"
    cut.write_bytes(cut.read_bytes()[:100])
    with pytest.raises(NnsslError) as err:
        verify_dataset(folder, num_processes=num_processes)
    message = str(err.value)
    assert "3 of 4 case(s)" in message
    for name, problem in [("nan_0000.nii.gz", "NaN"), ("flat_0000.nii.gz", "constant"), ("cut_0000.nii.gz", "")]:
        assert name in message and problem in message
    assert "good_0000" not in message
    assert "\n" not in message


def test_verify_dataset_reports_structure_first(tmp_path):
    folder = _dataset(tmp_path / "Dataset500_Empty", {})
    with pytest.raises(NnsslError, match="empty dataset"):
        verify_dataset(folder)
