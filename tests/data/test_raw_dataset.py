"""Raw dataset access: dataset.json, case listing (structure problems) and reading with nnunetv2's reader."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

from nnssl.data.raw_dataset import (
    RawCase,
    describe_read_error,
    file_ending_of,
    list_raw_cases,
    load_dataset_json,
    read_case,
    reader_for,
)
from nnssl.errors import NnsslError

CT = {"0": "CT"}


def _ct(shape_zyx=(5, 7, 8), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 1500, size=shape_zyx).astype(np.int16)


def _write(path: Path, array: np.ndarray, spacing_xyz=(0.8, 0.9, 2.5)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz[: image.GetDimension()])
    sitk.WriteImage(image, str(path), True)
    return path


def _dataset(root: Path, files: dict[str, np.ndarray], channel_names=None, num_training: int | None = -1,
             ending: str = ".nii.gz") -> Path:
    """``files`` maps file names (without ending) in imagesTr to arrays."""
    (root / "imagesTr").mkdir(parents=True)
    for stem, array in files.items():
        _write(root / "imagesTr" / f"{stem}{ending}", array)
    meta = {"channel_names": channel_names or CT, "file_ending": ending}
    if num_training == -1:
        num_training = len({stem.rsplit("_", 1)[0] for stem in files})
    if num_training is not None:
        meta["numTraining"] = num_training
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_load_dataset_json_missing(tmp_path):
    with pytest.raises(NnsslError, match=r"dataset.json is missing; create the dataset with nnssl_convert"):
        load_dataset_json(tmp_path)


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"file_ending": ".nii.gz"}', "lacks channel_names"),
    ('{"channel_names": {"0": "CT"}}', "lacks file_ending"),
    ('{"channel_names": {}, "file_ending": ".nii.gz"}', "non-empty mapping"),
    ('{"channel_names": {"0": "CT", "2": "PET"}, "file_ending": ".nii.gz"}', "without gaps"),
])
def test_load_dataset_json_invalid(tmp_path, text, fragment):
    (tmp_path / "dataset.json").write_text(text)
    with pytest.raises(NnsslError) as err:
        load_dataset_json(tmp_path)
    assert str(tmp_path / "dataset.json") in str(err.value)
    assert fragment in str(err.value)


def test_list_raw_cases_orders_cases_and_channels(tmp_path):
    files = {"b_0001": _ct(seed=1), "b_0000": _ct(seed=2), "a_x_0000": _ct(seed=3), "a_x_0001": _ct(seed=4)}
    folder = _dataset(tmp_path, files, channel_names={"0": "CT", "1": "CT2"})
    (folder / "imagesTr" / ".DS_Store").write_text("hidden files are not cases")
    cases = list_raw_cases(folder)
    assert cases == [
        RawCase("a_x", (folder / "imagesTr" / "a_x_0000.nii.gz", folder / "imagesTr" / "a_x_0001.nii.gz")),
        RawCase("b", (folder / "imagesTr" / "b_0000.nii.gz", folder / "imagesTr" / "b_0001.nii.gz")),
    ]


def test_list_raw_cases_without_num_training_is_fine(tmp_path):
    folder = _dataset(tmp_path, {"a_0000": _ct()}, num_training=None)
    assert [c.identifier for c in list_raw_cases(folder)] == ["a"]


def test_missing_images_tr(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": CT, "file_ending": ".nii.gz"}))
    with pytest.raises(NnsslError) as err:
        list_raw_cases(tmp_path)
    assert f"{tmp_path / 'imagesTr'} is missing" in str(err.value)
    assert "<case>_0000.nii.gz" in str(err.value)


def test_empty_dataset(tmp_path):
    folder = _dataset(tmp_path, {}, num_training=0)
    with pytest.raises(NnsslError, match=r"holds no images \(empty dataset\)"):
        list_raw_cases(folder)


def test_channel_count_mismatch_lists_every_problem(tmp_path):
    files = {"a_0000": _ct(), "b_0000": _ct(), "b_0001": _ct(), "c_0001": _ct(), "c_0002": _ct(), "c_0000": _ct()}
    folder = _dataset(tmp_path, files, channel_names={"0": "CT", "1": "PET"})
    with pytest.raises(NnsslError) as err:
        list_raw_cases(folder)
    message = str(err.value)
    assert "2 structure problem(s)" in message
    assert "case a lacks a_0001.nii.gz (dataset.json declares 2 channel(s))" in message
    assert "case c has extra channel file(s) c_0002.nii.gz" in message
    assert "case b" not in message


def test_misnamed_file_is_reported(tmp_path):
    folder = _dataset(tmp_path, {"a_0000": _ct(), "scan": _ct()}, num_training=1)
    with pytest.raises(NnsslError, match=r"scan.nii.gz is not named <case>_XXXX.nii.gz"):
        list_raw_cases(folder)


def test_num_training_disagreeing_with_images_tr(tmp_path):
    folder = _dataset(tmp_path, {"a_0000": _ct(), "b_0000": _ct()}, num_training=3)
    with pytest.raises(NnsslError, match=r"numTraining is 3 but imagesTr holds 2 case\(s\)"):
        list_raw_cases(folder)


def test_reader_is_the_one_nnunetv2_picks():
    assert reader_for(".nii.gz") is SimpleITKIO
    assert file_ending_of(Path("/x/ab.c_0000.NII.GZ")) == ".nii.gz"
    assert file_ending_of(Path("a_0000.nrrd")) == ".nrrd"
    with pytest.raises(NnsslError, match="no nnunetv2 reader handles this file type"):
        file_ending_of(Path("a_0000.dcm"))


def test_read_case_matches_nnunetv2_on_real_ct(shared_data):
    path = shared_data / "fixtures" / "sts_008_crop_0000.nii.gz"
    data, properties = read_case(RawCase("sts_008_crop", (path,)))
    expected, expected_properties = SimpleITKIO().read_images([str(path)])
    assert data.dtype == np.float32 and data.shape == (1, 32, 64, 64)  # README: 64x64x32 (x, y, z)
    np.testing.assert_array_equal(data, expected)
    np.testing.assert_allclose(properties["spacing"], [3.27, 0.9766, 0.9766], atol=1e-4)  # (Z, Y, X)
    assert properties["sitk_stuff"] == expected_properties["sitk_stuff"]
    assert data.min() >= -1000  # README: minimum HU of the sarcoma crops is -1000


def test_read_case_two_channels(tmp_path):
    a, b = _ct(seed=1), _ct(seed=2)
    paths = (_write(tmp_path / "c_0000.nii.gz", a), _write(tmp_path / "c_0001.nii.gz", b))
    data, properties = read_case(RawCase("c", paths))
    np.testing.assert_array_equal(data, np.stack([a, b]).astype(np.float32))
    np.testing.assert_allclose(properties["spacing"], [2.5, 0.9, 0.8], rtol=1e-6)


def test_read_case_truncated_real_file(tmp_path, shared_data):
    original = (shared_data / "fixtures" / "totalseg_example_ct_sm.nii.gz").read_bytes()
    cut = tmp_path / "ct_0000.nii.gz"
    cut.write_bytes(original[: len(original) // 2])
    with pytest.raises(NnsslError, match=rf"^{cut}: the gzip stream is truncated"):
        read_case(RawCase("ct", (cut,)))


@pytest.mark.parametrize("content", [b"", b"\x00" * 400, b"not an image"])
def test_read_case_unreadable_file(tmp_path, content):
    path = tmp_path / "bad_0000.nrrd"
    path.write_bytes(content)
    with pytest.raises(NnsslError) as err:
        read_case(RawCase("bad", (path,)))
    message = str(err.value)
    assert message.startswith(f"{path}: cannot be read (")
    assert "re-export or remove it" in message
    assert "\n" not in message and "0x" not in message and ".cxx" not in message


def test_read_case_missing_file(tmp_path):
    with pytest.raises(NnsslError, match="does not exist"):
        read_case(RawCase("gone", (tmp_path / "gone_0000.nii.gz",)))


def test_read_case_2d_image(tmp_path):
    path = _write(tmp_path / "slice_0000.nii.gz", _ct()[0])
    with pytest.raises(NnsslError, match=rf"^{path}: is a 2D image"):
        read_case(RawCase("slice", (path,)))


def test_read_case_4d_file_in_single_channel_case(tmp_path):
    image = sitk.JoinSeries([sitk.GetImageFromArray(_ct(seed=s)) for s in range(2)])  # 4D: 2 volumes
    path = tmp_path / "multi_0000.nii.gz"
    sitk.WriteImage(image, str(path), True)
    with pytest.raises(NnsslError, match=r"has 2 channel\(s\) but 1 are expected"):
        read_case(RawCase("multi", (path,)))


def test_read_case_channels_of_different_shape(tmp_path):
    paths = (_write(tmp_path / "c_0000.nii.gz", _ct((5, 7, 8))), _write(tmp_path / "c_0001.nii.gz", _ct((5, 7, 9))))
    with pytest.raises(NnsslError, match=r"^case c \(.*\): cannot be read"):
        read_case(RawCase("c", paths))


def test_describe_read_error_keeps_the_useful_lines():
    err = RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: /x/itkNrrdImageIO.cxx:935:\n"
                       "ITK ERROR: NrrdImageIO(0x55d64ad4faf0): Read: Error reading a.nrrd:\n"
                       "[nrrd] nrrdLoad: trouble reading \"a.nrrd\"\n"
                       "[nrrd] _nrrdEncodingGzip_read: expected 262144 bytes but received 130897\n")
    assert describe_read_error(err) == "Read: Error reading a.nrrd: expected 262144 bytes but received 130897"
    assert describe_read_error(RuntimeError()) == "RuntimeError"
