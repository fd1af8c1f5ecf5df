"""nnssl_convert from files and DICOM series: discovery, conversion, resume, atomicity and every bad input (the CLI
cases run the console script in a subprocess and check stderr and the exit code)."""
from __future__ import annotations

import json
import locale
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnssl.data import convert as convert_module
from nnssl.data.convert import SourceKind, convert_folder, discover_sources, keep_locale, sanitize_identifier
from nnssl.data.raw_dataset import list_raw_cases
from nnssl.data.raw_writer import STAGING_PREFIX
from nnssl.errors import NnsslError

SCRIPT = Path(sys.executable).parent / "nnssl_convert"
CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
CLI_TIMEOUT_S = 120


def _ct(shape_zyx=(6, 10, 12), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 1500, size=shape_zyx).astype(np.int16)


def _write(path: Path, array: np.ndarray, spacing_xyz=(0.7, 0.8, 2.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz[: image.GetDimension()])
    image.SetOrigin((10.0, -5.0, 3.0)[: image.GetDimension()])
    sitk.WriteImage(image, str(path), True)
    return path


def _write_dicom_series(folder: Path, array: np.ndarray, series_uid: str, spacing_xyz=(0.7, 0.8, 2.0),
                        z_positions=None) -> None:
    """One CT series, one file per slice, as a scanner would write it."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    positions = z_positions if z_positions is not None else [k * spacing_xyz[2] for k in range(array.shape[0])]
    for k, z in enumerate(positions):
        image = sitk.GetImageFromArray(array[k])
        image.SetSpacing(spacing_xyz[:2])
        tags = {"0008|0060": "CT", "0008|0016": CT_SOP_CLASS, "0008|0018": f"{series_uid}.{k + 1}",
                "0020|000d": "1.2.826.0.1.3680043.2.1125.9", "0020|000e": series_uid, "0020|0013": str(k + 1),
                "0020|0032": f"0\\0\\{z}", "0020|0037": "1\\0\\0\\0\\1\\0", "0018|0050": str(spacing_xyz[2])}
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{series_uid.rsplit('.', 1)[1]}_{k:03d}.dcm"))
        with keep_locale():  # GDCM's writer switches the process locale too
            writer.Execute(image)


def _run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    assert SCRIPT.exists(), f"{SCRIPT} missing: run `.venv/bin/pip install --no-deps -e .`"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, encoding="utf-8", errors="replace",
                          timeout=CLI_TIMEOUT_S, env=env if env is not None else dict(os.environ))


def _error_line(result: subprocess.CompletedProcess) -> str:
    """The single ``nnssl: error:`` line of stderr (tqdm output aside)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("nnssl: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _image(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


@pytest.mark.parametrize("text, expected", [("scan 1.v2", "scan_1_v2"), ("a/b", "a_b"), ("Ünï", "n"), ("...", "case"),
                                            ("ok-id_3", "ok-id_3")])
def test_sanitize_identifier(text, expected):
    assert sanitize_identifier(text) == expected


def test_discover_sources_ids_are_readable_and_unique(tmp_path):
    root = tmp_path / "in"
    encoding_before = locale.getpreferredencoding(False)
    _write(root / "lung_0000.nii.gz", _ct())
    _write(root / "lung.nrrd", _ct())  # same id after dropping _0000 -> made unique
    _write(root / "p 1" / "ct.mha", _ct())
    _write(root / "p2" / "ct.nii", _ct())
    _write(root / "p3" / "ct.mhd", _ct())  # + ct.zraw, its voxels
    _write(root / ".hidden" / "x.nii.gz", _ct())
    (root / "README.md").write_text("notes")
    _write_dicom_series(root / "dicom" / "study", _ct(), "1.2.3.100")
    _write_dicom_series(root / "dicom" / "study", _ct(seed=1), "1.2.3.200")
    sources, ignored = discover_sources(root)
    by_id = {s.identifier: s for s in sources}
    assert sorted(by_id) == ["dicom_study_series1", "dicom_study_series2", "lung", "lung_2", "p2_ct", "p3_ct",
                             "p_1_ct"]
    assert [p.name for p in (root / "p3").glob("ct.*raw")] == ["ct.zraw"]  # not listed as ignored
    assert by_id["dicom_study_series1"].kind == SourceKind.DICOM_SERIES
    assert len(by_id["dicom_study_series2"].files) == 6
    assert by_id["p2_ct"].files == (root / "p2" / "ct.nii",)
    assert ignored == [root / "README.md"]
    assert locale.getpreferredencoding(False) == encoding_before, "GDCM changed the process locale"


def _check_same_image(converted: Path, original: sitk.Image) -> None:
    image = _image(converted)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(original))
    assert image.GetPixelID() == original.GetPixelID()
    np.testing.assert_allclose(image.GetSpacing(), original.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), original.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), original.GetDirection(), atol=1e-6)


def test_convert_files_and_dicom_keeps_voxels_and_geometry(tmp_path, nnssl_env):
    root = tmp_path / "in"
    nrrd = _write(root / "a.nrrd", _ct(seed=1))
    _write_dicom_series(root / "series", _ct(seed=2), "1.2.3.7")
    (root / "LICENSE.txt").write_text("CC BY 4.0")
    report = convert_folder(root, 500, "Mixed", num_processes=1)
    folder = nnssl_env["nnssl_raw"] / "Dataset500_Mixed"
    assert report.dataset_folder == folder
    assert sorted(report.written) == ["a", "series"] and report.failed == [] and report.num_cases == 2
    assert report.ignored == []  # the licence is attribution, not an ignored file
    _check_same_image(folder / "imagesTr" / "a_0000.nii.gz", _image(nrrd))
    dicom = _image(folder / "imagesTr" / "series_0000.nii.gz")
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(dicom), _ct(seed=2))
    np.testing.assert_allclose(dicom.GetSpacing(), (0.7, 0.8, 2.0), rtol=1e-6)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["file_ending"] == ".nii.gz" and meta["numTraining"] == 2
    assert "labels" not in meta
    assert meta["source"]["input"] == str(root) and meta["source"]["cases"]["series"] == str(root / "series")
    assert "LICENSE.txt" in meta["attribution"]
    assert (folder / "attribution" / "LICENSE.txt").read_text() == "CC BY 4.0"
    assert [c.identifier for c in list_raw_cases(folder)] == ["a", "series"]
    assert not list(folder.glob(f"{STAGING_PREFIX}*"))
    assert oct((folder / "dataset.json").stat().st_mode & 0o777) == oct(0o644)


def test_rerun_skips_done_cases_and_overwrite_redoes_them(tmp_path, nnssl_env):
    root = tmp_path / "in"
    _write(root / "a.nii.gz", _ct(seed=1))
    first = convert_folder(root, 501, "Resume", num_processes=1)
    assert first.written == ["a"]
    _write(root / "b.nii.gz", _ct(seed=2))
    second = convert_folder(root, 501, "Resume", num_processes=1)
    assert second.skipped == ["a"] and second.written == ["b"] and second.num_cases == 2
    target = nnssl_env["nnssl_raw"] / "Dataset501_Resume" / "imagesTr" / "a_0000.nii.gz"
    _write(root / "a.nii.gz", _ct(seed=3))  # the source changed: only --overwrite picks it up
    third = convert_folder(root, 501, "Resume", num_processes=1, overwrite=True)
    assert sorted(third.written) == ["a", "b"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(_image(target)), _ct(seed=3))


def test_bad_files_are_listed_and_the_rest_converted(tmp_path, nnssl_env, shared_data):
    root = tmp_path / "in"
    _write(root / "good.nii.gz", _ct())
    _write(root / "flat.nii.gz", np.zeros((6, 10, 12), np.int16))
    _write(root / "slice.nii.gz", _ct()[0])
    nan = _ct().astype(np.float32)
    nan[1, 2, 3] = np.nan
    _write(root / "nan.nrrd", nan)
    real = (shared_data / "fixtures" / "sts_008_crop_0000.nii.gz").read_bytes()
    (root / "cut.nii.gz").write_bytes(real[: len(real) // 2])
    _write_dicom_series(root / "gappy", _ct(), "1.2.3.9", z_positions=[0, 2, 4, 8, 10, 12])  # slice 6 mm missing
    report = convert_folder(root, 502, "Partial", num_processes=2)
    assert report.written == ["good"] and report.num_cases == 1
    reasons = dict(report.failed)
    assert len(reasons) == 5
    assert "constant image" in reasons[str(root / "flat.nii.gz")]
    assert "2D image" in reasons[str(root / "slice.nii.gz")]
    assert "NaN/inf" in reasons[str(root / "nan.nrrd")]
    assert "truncated" in reasons[str(root / "cut.nii.gz")]
    assert "not evenly spaced" in next(r for s, r in report.failed if s.startswith(str(root / "gappy")))
    images = nnssl_env["nnssl_raw"] / "Dataset502_Partial" / "imagesTr"
    assert sorted(p.name for p in images.iterdir()) == ["good_0000.nii.gz"]


def test_nothing_convertible_leaves_no_dataset(tmp_path, nnssl_env):
    root = tmp_path / "in"
    _write(root / "slice.nii.gz", _ct()[0])
    with pytest.raises(NnsslError, match=r"nothing could be converted from .*slice.nii.gz: is a 2D image"):
        convert_folder(root, 503, "Nothing", num_processes=1)
    assert not (nnssl_env["nnssl_raw"] / "Dataset503_Nothing").exists()


def test_id_taken_by_another_dataset(tmp_path, nnssl_env):
    (nnssl_env["nnssl_raw"] / "Dataset504_Other").mkdir()
    _write(tmp_path / "in" / "a.nii.gz", _ct())
    with pytest.raises(NnsslError, match="dataset id 504 is already used by Dataset504_Other"):
        convert_folder(tmp_path / "in", 504, "Mine", num_processes=1)


def test_killed_write_leaves_no_partial_image(tmp_path, nnssl_env, monkeypatch):
    root = tmp_path / "in"
    for k in range(3):
        _write(root / f"c{k}.nii.gz", _ct(seed=k))
    real_write = sitk.WriteImage
    calls = []

    def write_then_die(image, path, *args):
        calls.append(path)
        if len(calls) == 2:  # die in the middle of writing the second case
            Path(path).write_bytes(b"\x1f\x8b half a file")
            raise KeyboardInterrupt
        real_write(image, path, *args)

    monkeypatch.setattr(convert_module.sitk, "WriteImage", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        convert_folder(root, 505, "Killed", num_processes=1)
    folder = nnssl_env["nnssl_raw"] / "Dataset505_Killed"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["c0_0000.nii.gz"]
    assert not (folder / "dataset.json").exists()  # visibly unfinished
    assert not list(folder.glob(f"{STAGING_PREFIX}*"))
    monkeypatch.setattr(convert_module.sitk, "WriteImage", real_write)
    report = convert_folder(root, 505, "Killed", num_processes=1)
    assert report.skipped == ["c0"] and report.written == ["c1", "c2"]
    assert len(list_raw_cases(folder)) == 3


def test_stale_staging_of_a_dead_run_is_removed(tmp_path, nnssl_env):
    dead_pid = 2**22 + 12345  # above Linux's pid_max default range: no such process
    folder = nnssl_env["nnssl_raw"] / "Dataset506_Stale"
    stale = folder / f"{STAGING_PREFIX}{dead_pid}-abc"
    stale.mkdir(parents=True)
    (stale / "x_0000.nii.gz").write_bytes(b"partial")
    _write(tmp_path / "in" / "a.nii.gz", _ct())
    convert_folder(tmp_path / "in", 506, "Stale", num_processes=1)
    assert not stale.exists()


def test_cli_converts_real_ct(tmp_path, nnssl_env, shared_data):
    root = tmp_path / "in"
    root.mkdir()
    source = shared_data / "unlabeled_ct" / "totalseg_examplect_0000.nii.gz"  # the smallest volume (1.7 MB)
    (root / source.name).symlink_to(source)
    (root / "README.md").symlink_to(shared_data / "unlabeled_ct" / "README.md")
    result = _run_cli("-i", str(root), "-d", "500", "-n", "LungCTUnlabeled", "-np", "1")
    assert result.returncode == 0, result.stderr
    folder = nnssl_env["nnssl_raw"] / "Dataset500_LungCTUnlabeled"
    assert "1 case(s); 1 written now" in result.stdout
    _check_same_image(folder / "imagesTr" / "totalseg_examplect_0000.nii.gz", _image(source))
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["numTraining"] == 1 and "README.md" in meta["attribution"]
    rerun = _run_cli("-i", str(root), "-d", "500", "-n", "LungCTUnlabeled")
    assert rerun.returncode == 0 and "0 written now, 1 already there" in rerun.stdout


@pytest.mark.slow
def test_cli_converts_all_of_unlabeled_ct(nnssl_env, shared_data):
    result = _run_cli("-i", str(shared_data / "unlabeled_ct"), "-d", "500", "-n", "LungCTUnlabeled", "-np", "2")
    assert result.returncode == 0, result.stderr
    cases = list_raw_cases(nnssl_env["nnssl_raw"] / "Dataset500_LungCTUnlabeled")
    assert [c.identifier for c in cases] == ["lungpetctdx_A0001", "lungpetctdx_A0002", "totalseg_aortacrop",
                                             "totalseg_examplect"]


def test_cli_partial_failure_exits_zero_and_lists_the_bad_file(tmp_path, nnssl_env):
    _write(tmp_path / "in" / "good.nii.gz", _ct())
    _write(tmp_path / "in" / "slice.nii.gz", _ct()[0])
    result = _run_cli("-i", str(tmp_path / "in"), "-d", "507", "-n", "Some")
    assert result.returncode == 0, result.stderr
    assert "could not convert 1 input(s)" in result.stderr
    assert f"{tmp_path / 'in' / 'slice.nii.gz'}: is a 2D image" in result.stderr


def _bad_nan(root: Path) -> Path:
    data = _ct().astype(np.float32)
    data[0, 0, 0] = np.nan
    return _write(root / "nan.nii.gz", data)


def _bad_truncated(root: Path) -> Path:
    path = _write(root / "cut.nii.gz", _ct((20, 30, 30)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _bad_unreadable(root: Path) -> Path:
    path = root / "junk.mha"
    path.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementDataFile = LOCAL\n")
    return path


def _bad_2d(root: Path) -> Path:
    return _write(root / "slice.nii.gz", _ct()[0])


def _bad_channels(root: Path) -> Path:
    path = root / "two.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(_ct(seed=s)) for s in range(2)]), str(path), True)
    return path


@pytest.mark.parametrize("make_bad, fragment", [(_bad_nan, "NaN/inf voxel"), (_bad_truncated, "truncated"),
                                                (_bad_unreadable, "cannot be read"), (_bad_2d, "2D image"),
                                                (_bad_channels, "2 channel(s) but 1 are expected")])
def test_cli_single_bad_file_fails_with_one_line(tmp_path, nnssl_env, make_bad, fragment):
    root = tmp_path / "in"
    root.mkdir()
    bad = make_bad(root)
    result = _run_cli("-i", str(root), "-d", "508", "-n", "Bad", "-np", "1")
    assert result.returncode == 2
    line = _error_line(result)
    assert str(bad) in line and fragment in line
    assert "Traceback" not in result.stderr
    assert not (nnssl_env["nnssl_raw"] / "Dataset508_Bad").exists()


def test_cli_empty_input_folder(tmp_path, nnssl_env):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("no images here")
    result = _run_cli("-i", str(tmp_path / "in"), "-d", "509", "-n", "Empty")
    assert result.returncode == 2
    assert f"no CT images found in {tmp_path / 'in'}" in _error_line(result)


def test_cli_input_not_a_folder(tmp_path, nnssl_env):
    result = _run_cli("-i", str(tmp_path / "missing"), "-d", "509", "-n", "X")
    assert result.returncode == 2
    assert "is not a folder; pass -i a folder" in _error_line(result)


def test_cli_env_var_unset(tmp_path):
    _write(tmp_path / "in" / "a.nii.gz", _ct())
    env = {k: v for k, v in os.environ.items() if k != "nnssl_raw"}
    result = _run_cli("-i", str(tmp_path / "in"), "-d", "500", "-n", "X", env=env)
    assert result.returncode == 2
    line = _error_line(result)
    assert "environment variable nnssl_raw is not set" in line and "export nnssl_raw=" in line


@pytest.mark.parametrize("args, fragment", [(["-d", "0", "-n", "X"], "between 1 and 999"),
                                            (["-d", "5", "-n", "bad name"], "letters, digits"),
                                            (["-d", "5"], "-n NAME is required with -i"),
                                            (["-d", "5", "-n", "X", "-np", "0"], "-np must be at least 1")])
def test_cli_bad_arguments(tmp_path, nnssl_env, args, fragment):
    _write(tmp_path / "in" / "a.nii.gz", _ct())
    result = _run_cli("-i", str(tmp_path / "in"), *args)
    assert result.returncode == 2
    assert fragment in _error_line(result)
