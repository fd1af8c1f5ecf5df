"""The four planning/preprocessing commands as a user runs them: success, rerun, and bad input with clear errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_ct import default_cases, write_image, write_raw_dataset

from nnssl.cli import plan_and_preprocess as cli
from nnssl.config.enums import Normalization
from nnssl.config.plans import Plans
from nnssl.data.dataset import PreprocessedDataset

DATASET = "Dataset900_Tiny"


@pytest.fixture
def raw(nnssl_env: dict[str, Path]) -> Path:
    return write_raw_dataset(nnssl_env["nnssl_raw"], DATASET, default_cases())


def _fails(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    err = stderr.strip().splitlines()[-1]  # progress bars may come before the error line
    assert err.startswith("nnssl: error: ")
    return err


def test_plan_and_preprocess_then_rerun_reuses_everything(raw, nnssl_env, capsys):
    assert cli.main(["-d", "900", "-np", "1"]) == 0
    out = capsys.readouterr().out
    assert "spacing" in out and "normalization ct" in out and "pretraining patch" in out
    preprocessed = nnssl_env["nnssl_preprocessed"] / DATASET
    dataset = PreprocessedDataset(preprocessed)
    assert dataset.identifiers == ["ct_a", "ct_b", "ct_c"]
    assert dataset.plans.normalization == Normalization.CT
    assert cli.main(["-d", DATASET, "-np", "1"]) == 0
    out = capsys.readouterr().out
    assert "reusing" in out and "all 3 cases are already preprocessed" in out


def test_the_three_steps_alone_with_overrides(raw, nnssl_env, capsys):
    assert cli.extract_fingerprint_main(["-d", "900", "-np", "1", "--verify"]) == 0
    assert cli.plan_experiment_main(["-d", "900", "--spacing", "3", "1", "1", "--patch-size", "32", "64", "64",
                                     "--normalization", "zscore"]) == 0
    assert cli.preprocess_main(["-d", "900", "-np", "1"]) == 0
    preprocessed = nnssl_env["nnssl_preprocessed"] / DATASET
    plans = Plans.load(preprocessed / "nnsslPlans.json")
    assert plans.spacing == (3.0, 1.0, 1.0) and plans.patch_size == (32, 64, 64)
    assert plans.normalization == Normalization.ZSCORE
    assert json.loads((preprocessed / "dataset_fingerprint.json").read_text())["dataset_name"] == DATASET
    data, _, _ = PreprocessedDataset(preprocessed).load_case("ct_a")
    assert np.asarray(data[:]).mean() == pytest.approx(0.0, abs=0.05)  # per-image z-score (before resampling)


def test_unknown_dataset(raw, capsys):
    err = _fails(cli.main, ["-d", "901"], capsys)
    assert "no dataset '901'" in err and DATASET in err and "nnssl_convert" in err


def test_unset_folder_variable(raw, monkeypatch, capsys):
    monkeypatch.delenv("nnssl_raw")
    err = _fails(cli.main, ["-d", "900"], capsys)
    assert "nnssl_raw is not set" in err and "export nnssl_raw=" in err


def test_missing_fingerprint_names_the_command(raw, capsys):
    err = _fails(cli.plan_experiment_main, ["-d", "900"], capsys)
    assert "dataset_fingerprint.json" in err and "nnssl_extract_fingerprint -d 900" in err


def test_missing_plans_names_the_command(raw, capsys):
    err = _fails(cli.preprocess_main, ["-d", "900"], capsys)
    assert "nnsslPlans.json" in err and "nnssl_plan_experiment -d 900" in err


def test_edited_plans_with_unknown_key(raw, nnssl_env, capsys):
    cli.extract_fingerprint_main(["-d", "900", "-np", "1"])
    cli.plan_experiment_main(["-d", "900"])
    path = nnssl_env["nnssl_preprocessed"] / DATASET / "nnsslPlans.json"
    content = json.loads(path.read_text())
    content["patchsize"] = [64, 64, 64]
    path.write_text(json.dumps(content))
    capsys.readouterr()
    err = _fails(cli.preprocess_main, ["-d", "900"], capsys)
    assert str(path) in err and "unknown plans keys ['patchsize']" in err


def test_invalid_patch_size_names_the_nearest(raw, capsys):
    cli.extract_fingerprint_main(["-d", "900", "-np", "1"])
    capsys.readouterr()
    err = _fails(cli.plan_experiment_main, ["-d", "900", "--patch-size", "48", "64", "64"], capsys)
    assert "Z=48 (nearest valid: 32 or 64)" in err


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nan_voxels_name_the_file_and_leave_no_output(raw, nnssl_env, capsys, bad_value):
    image, spacing = default_cases()["ct_b"]
    image = image.astype(np.float32)
    image[2, 10, 10] = bad_value
    write_image(raw / "imagesTr" / "ct_b_0000.nii.gz", image, spacing)
    err = _fails(cli.main, ["-d", "900", "-np", "1"], capsys)
    assert "ct_b_0000.nii.gz" in err and "NaN/inf" in err
    assert not (nnssl_env["nnssl_preprocessed"] / DATASET / "dataset_fingerprint.json").exists()


def test_verify_lists_every_bad_file(raw, nnssl_env, capsys):
    for identifier in ("ct_a", "ct_c"):
        path = raw / "imagesTr" / f"{identifier}_0000.nii.gz"
        path.write_bytes(path.read_bytes()[:200])
    err = _fails(cli.main, ["-d", "900", "-np", "1", "--verify"], capsys)
    assert "2 of 3 case(s)" in err and "ct_a_0000.nii.gz" in err and "ct_c_0000.nii.gz" in err


@pytest.mark.parametrize("main", [cli.main, cli.extract_fingerprint_main, cli.plan_experiment_main,
                                  cli.preprocess_main])
def test_help_explains(main, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "-d" in out and "nnssl_preprocessed" in out


def test_console_script_exit_code_and_one_line(raw):
    script = Path(sys.executable).parent / "nnssl_plan_and_preprocess"
    result = subprocess.run([str(script), "-d", "977"], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("nnssl: error: no dataset '977'")
    assert len(result.stderr.strip().splitlines()) == 1

