"""nnssl_convert --from-nnunet: an nnU-Net raw dataset's images registered as unlabeled data (links, no labels)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnssl.data import raw_writer
from nnssl.data.link_nnunet import link_nnunet_dataset, resolve_nnunet_dataset
from nnssl.data.raw_dataset import list_raw_cases, read_case
from nnssl.errors import NnsslError

SCRIPT = Path(sys.executable).parent / "nnssl_convert"
CLI_TIMEOUT_S = 120
SARCOMA = "Dataset510_SarcomaCT"


def _ct(shape_zyx=(5, 7, 8), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 1500, size=shape_zyx).astype(np.int16)


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), True)
    return path


def _nnunet_dataset(folder: Path, cases=("a", "b"), channels=("CT",), num_training: int | None = None) -> Path:
    for k, case in enumerate(cases):
        for c in range(len(channels)):
            _write(folder / "imagesTr" / f"{case}_{c:04d}.nii.gz", _ct(seed=10 * k + c))
        _write(folder / "labelsTr" / f"{case}.nii.gz", np.ones((5, 7, 8), np.uint8))
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    meta = {"channel_names": {str(i): n for i, n in enumerate(channels)}, "labels": {"background": 0, "tumor": 1},
            "numTraining": len(cases) if num_training is None else num_training, "file_ending": ".nii.gz",
            "licence": "CC BY 3.0", "reference": "Someone et al."}
    (folder / "dataset.json").write_text(json.dumps(meta))
    (folder / "ATTRIBUTION.md").write_text("cite us")
    return folder


def _run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    assert SCRIPT.exists(), f"{SCRIPT} missing: run `.venv/bin/pip install --no-deps -e .`"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, encoding="utf-8", errors="replace",
                          timeout=CLI_TIMEOUT_S, env=env if env is not None else dict(os.environ))


def _error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("nnssl: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_links_images_and_drops_labels(tmp_path, nnssl_env):
    source = _nnunet_dataset(tmp_path / "Dataset101_Tumours")
    report = link_nnunet_dataset(str(source), 520, "Tumours", num_processes=1)
    folder = nnssl_env["nnssl_raw"] / "Dataset520_Tumours"
    assert report.written == ["a", "b"] and report.num_cases == 2 and report.failed == []
    for case in ("a", "b"):
        link = folder / "imagesTr" / f"{case}_0000.nii.gz"
        assert link.is_symlink() and link.resolve() == (source / "imagesTr" / f"{case}_0000.nii.gz").resolve()
    assert not (folder / "labelsTr").exists()
    meta = json.loads((folder / "dataset.json").read_text())
    assert "labels" not in meta
    assert meta["numTraining"] == 2 and meta["channel_names"] == {"0": "CT"} and meta["licence"] == "CC BY 3.0"
    assert meta["source"]["nnunet_raw_dataset"] == str(source) and "linked" in meta["source"]["note"]
    assert (folder / "attribution" / "ATTRIBUTION.md").read_text() == "cite us"
    data, _ = read_case(list_raw_cases(folder)[1])
    np.testing.assert_array_equal(data[0], _ct(seed=10))
    rerun = link_nnunet_dataset(str(source), 520, "Tumours", num_processes=1)
    assert rerun.skipped == ["a", "b"] and rerun.written == []


def test_resolves_id_and_name_in_nnunet_raw_and_defaults_the_name(nnssl_env):
    source = _nnunet_dataset(nnssl_env["nnUNet_raw"] / "Dataset510_Sarc")
    assert resolve_nnunet_dataset("510") == source
    assert resolve_nnunet_dataset("Dataset510_Sarc") == source
    report = link_nnunet_dataset("510", 521, num_processes=1)
    assert report.dataset_folder == nnssl_env["nnssl_raw"] / "Dataset521_Sarc"


def test_copies_where_links_fail(tmp_path, nnssl_env, monkeypatch):
    source = _nnunet_dataset(tmp_path / "Dataset102_NoLinks", cases=("a",))

    def no_symlinks(*args, **kwargs):
        raise OSError("symlinks not supported here")

    monkeypatch.setattr(raw_writer.os, "symlink", no_symlinks)
    link_nnunet_dataset(str(source), 522, "Copied", num_processes=1)
    image = nnssl_env["nnssl_raw"] / "Dataset522_Copied" / "imagesTr" / "a_0000.nii.gz"
    assert image.is_file() and not image.is_symlink()
    assert image.read_bytes() == (source / "imagesTr" / "a_0000.nii.gz").read_bytes()
    meta = json.loads((image.parents[1] / "dataset.json").read_text())
    assert "copied" in meta["source"]["note"]


def test_two_channels_are_linked_together(tmp_path, nnssl_env):
    source = _nnunet_dataset(tmp_path / "Dataset103_Two", cases=("a",), channels=("CT", "PET"))
    link_nnunet_dataset(str(source), 523, "Two", num_processes=1)
    cases = list_raw_cases(nnssl_env["nnssl_raw"] / "Dataset523_Two")
    assert [f.name for f in cases[0].files] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    assert read_case(cases[0])[0].shape == (2, 5, 7, 8)


def test_unreadable_image_is_listed_and_not_linked(tmp_path, nnssl_env):
    source = _nnunet_dataset(tmp_path / "Dataset104_Broken", cases=("a", "b", "c"))
    broken = source / "imagesTr" / "b_0000.nii.gz"
    broken.write_bytes(broken.read_bytes()[:60])
    report = link_nnunet_dataset(str(source), 524, "Broken", num_processes=2)
    assert report.written == ["a", "c"]
    assert report.failed[0][0] == str(broken) and str(broken) in report.failed[0][1]
    folder = nnssl_env["nnssl_raw"] / "Dataset524_Broken"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["a_0000.nii.gz", "c_0000.nii.gz"]
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 2


def test_sarcoma_subset_links_real_ct(tmp_path, nnssl_env, shared_data):
    real = shared_data / SARCOMA
    subset = tmp_path / SARCOMA
    (subset / "imagesTr").mkdir(parents=True)
    for case in ("STS_008", "STS_025"):  # two of the smallest crops
        (subset / "imagesTr" / f"{case}_0000.nii.gz").symlink_to(real / "imagesTr" / f"{case}_0000.nii.gz")
    meta = json.loads((real / "dataset.json").read_text())
    (subset / "dataset.json").write_text(json.dumps({**meta, "numTraining": 2}))
    result = _run_cli("--from-nnunet", str(subset), "-d", "520", "-n", "Sarcoma", "-np", "1")
    assert result.returncode == 0, result.stderr
    folder = nnssl_env["nnssl_raw"] / "Dataset520_Sarcoma"
    cases = list_raw_cases(folder)
    assert [c.identifier for c in cases] == ["STS_008", "STS_025"]
    data, properties = read_case(cases[0])
    assert data.shape == (1, 51, 137, 141)  # ATTRIBUTION.md: STS_008 is 141x137x51 (x, y, z)
    np.testing.assert_allclose(properties["spacing"], [3.27, 0.9766, 0.9766], atol=1e-4)
    assert json.loads((folder / "dataset.json").read_text())["licence"] == "CC BY 3.0"


@pytest.mark.slow
def test_cli_whole_sarcoma_dataset(nnssl_env, shared_data):
    result = _run_cli("--from-nnunet", str(shared_data / SARCOMA), "-d", "520", "-n", "Sarcoma", "-np", "2")
    assert result.returncode == 0, result.stderr
    folder = nnssl_env["nnssl_raw"] / "Dataset520_Sarcoma"
    assert len(list_raw_cases(folder)) == 36
    assert sorted(p.name for p in (folder / "attribution").iterdir()) == ["ATTRIBUTION.md", "LICENSE.md"]


def test_cli_unknown_id(nnssl_env):
    _nnunet_dataset(nnssl_env["nnUNet_raw"] / "Dataset510_Sarc")
    result = _run_cli("--from-nnunet", "999", "-d", "525")
    assert result.returncode == 2
    line = _error_line(result)
    assert "no dataset '999'" in line and "Dataset510_Sarc" in line
    assert not (nnssl_env["nnssl_raw"] / "Dataset525_Sarc").exists()


def test_cli_nnunet_raw_unset_for_an_id(nnssl_env):
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_raw"}
    result = _run_cli("--from-nnunet", "510", "-d", "525", env=env)
    assert result.returncode == 2
    assert "environment variable nnUNet_raw is not set" in _error_line(result)


def test_cli_path_that_does_not_exist(tmp_path, nnssl_env):
    result = _run_cli("--from-nnunet", str(tmp_path / "nope"), "-d", "525")
    assert result.returncode == 2
    assert f"--from-nnunet {tmp_path / 'nope'}: no such folder" in _error_line(result)


def test_cli_missing_images_tr(tmp_path, nnssl_env):
    source = _nnunet_dataset(tmp_path / "Dataset105_NoImages")
    for path in (source / "imagesTr").iterdir():
        path.unlink()
    (source / "imagesTr").rmdir()
    result = _run_cli("--from-nnunet", str(source), "-d", "526", "-n", "X")
    assert result.returncode == 2
    assert f"{source / 'imagesTr'} is missing" in _error_line(result)
    assert not (nnssl_env["nnssl_raw"] / "Dataset526_X").exists()


def test_cli_empty_dataset(tmp_path, nnssl_env):
    source = _nnunet_dataset(tmp_path / "Dataset106_Empty", cases=())
    result = _run_cli("--from-nnunet", str(source), "-d", "527", "-n", "X")
    assert result.returncode == 2
    assert "holds no images (empty dataset)" in _error_line(result)


def test_cli_channel_count_mismatch(tmp_path, nnssl_env):
    source = _nnunet_dataset(tmp_path / "Dataset107_Channels", cases=("a",))
    meta = json.loads((source / "dataset.json").read_text())
    (source / "dataset.json").write_text(json.dumps({**meta, "channel_names": {"0": "CT", "1": "PET"}}))
    result = _run_cli("--from-nnunet", str(source), "-d", "528", "-n", "X")
    assert result.returncode == 2
    assert "case a lacks a_0001.nii.gz (dataset.json declares 2 channel(s))" in _error_line(result)


def test_cli_every_image_broken(tmp_path, nnssl_env):
    source = _nnunet_dataset(tmp_path / "Dataset108_AllBad", cases=("a",))
    image = source / "imagesTr" / "a_0000.nii.gz"
    image.write_bytes(image.read_bytes()[:60])
    result = _run_cli("--from-nnunet", str(source), "-d", "529", "-n", "X")
    assert result.returncode == 2
    assert f"no usable image in {source}: {image}" in _error_line(result)
    assert not (nnssl_env["nnssl_raw"] / "Dataset529_X").exists()


def test_resolve_rejects_non_ids(nnssl_env):
    with pytest.raises(NnsslError, match="not a dataset id or DatasetXXX_Name"):
        resolve_nnunet_dataset("Sarcoma")
