"""nnssl.paths: env-var folders with a one-line fix, and DatasetXXX_Name resolution by number or name."""
from __future__ import annotations

from pathlib import Path

import pytest

from nnssl import paths
from nnssl.errors import NnsslError


@pytest.mark.parametrize("getter, variable", [(paths.nnssl_raw, "nnssl_raw"),
                                              (paths.nnssl_preprocessed, "nnssl_preprocessed"),
                                              (paths.nnssl_results, "nnssl_results")])
@pytest.mark.parametrize("value", [None, "", "   "])
def test_unset_env_var_names_variable_and_fix(monkeypatch, getter, variable, value):
    if value is None:
        monkeypatch.delenv(variable, raising=False)
    else:
        monkeypatch.setenv(variable, value)
    with pytest.raises(NnsslError) as err:
        getter()
    message = str(err.value)
    assert f"environment variable {variable} is not set" in message
    assert f"export {variable}=" in message
    assert "\n" not in message


def test_env_folder_returns_the_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("nnssl_raw", str(tmp_path / "raw"))
    assert paths.nnssl_raw() == tmp_path / "raw"


def test_env_folder_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("nnssl_results", "~/results")
    assert paths.nnssl_results() == tmp_path / "results"


def test_dataset_name_formats_three_digits():
    assert paths.dataset_name(5, "Lung_CT") == "Dataset005_Lung_CT"
    assert paths.dataset_name(500, "LungCT") == "Dataset500_LungCT"


@pytest.mark.parametrize("dataset_id, name, fragment", [(0, "A", "between 1 and 999"), (1000, "A", "between 1 and 999"),
                                                        (5, "bad name", "letters, digits"), (5, "", "letters")])
def test_dataset_name_rejects_bad_input(dataset_id, name, fragment):
    with pytest.raises(NnsslError, match=fragment):
        paths.dataset_name(dataset_id, name)


@pytest.mark.parametrize("folder, expected", [("Dataset500_LungCT", (500, "LungCT")), ("Dataset007_a_b", (7, "a_b")),
                                              ("Dataset50_X", None), ("dataset500_X", None), ("Dataset500_", None)])
def test_parse_dataset_name(folder, expected):
    assert paths.parse_dataset_name(folder) == expected


@pytest.fixture
def raw_root(tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    for name in ("Dataset500_LungCT", "Dataset501_Phantoms", "Dataset007_Small"):
        (root / name).mkdir(parents=True)
    (root / "Dataset502_NotAFolder").write_text("a file, not a dataset")
    return root


@pytest.mark.parametrize("key, expected", [(500, "Dataset500_LungCT"), ("500", "Dataset500_LungCT"),
                                           ("7", "Dataset007_Small"), ("007", "Dataset007_Small"),
                                           ("Dataset501_Phantoms", "Dataset501_Phantoms"),
                                           (" 501 ", "Dataset501_Phantoms")])
def test_find_dataset_by_number_or_name(raw_root, key, expected):
    assert paths.find_dataset(raw_root, key) == raw_root / expected


def test_find_dataset_ambiguous_number_lists_both(raw_root):
    (raw_root / "Dataset500_Other").mkdir()
    with pytest.raises(NnsslError) as err:
        paths.find_dataset(raw_root, 500)
    message = str(err.value)
    assert "ambiguous" in message
    assert "Dataset500_LungCT" in message and "Dataset500_Other" in message
    assert "full DatasetXXX_Name" in message
    # the full name still resolves
    assert paths.find_dataset(raw_root, "Dataset500_Other") == raw_root / "Dataset500_Other"


@pytest.mark.parametrize("key", [999, "502", "Dataset500_Wrong", "LungCT"])
def test_find_dataset_unknown_lists_known_and_the_fix(raw_root, key):
    with pytest.raises(NnsslError) as err:
        paths.find_dataset(raw_root, key)
    message = str(err.value)
    assert f"no dataset {str(key)!r}" in message
    assert "Dataset500_LungCT" in message  # what exists
    assert "nnssl_convert" in message  # how to create one


def test_find_dataset_in_missing_root(tmp_path):
    with pytest.raises(NnsslError, match=r"found: none"):
        paths.find_dataset(tmp_path / "nowhere", 500)
