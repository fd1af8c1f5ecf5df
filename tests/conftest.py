"""Shared fixtures: real-data location (overridable, skipped when absent) and isolated nnssl/nnU-Net folders."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA_ENV = "NNSSL_SHARED_DATA"


def shared_data_dir() -> Path:
    """``$NNSSL_SHARED_DATA`` or ``../shared/data`` beside the checkout."""
    return Path(os.environ.get(SHARED_DATA_ENV, REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """Real CT from ../shared/data; the test is skipped with the reason when it is absent."""
    root = shared_data_dir()
    if not (root / "fixtures").is_dir():
        pytest.skip(f"real CT data not found at {root} (set {SHARED_DATA_ENV} to its folder)")
    return root


@pytest.fixture
def nnssl_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Fresh nnssl_* and nnUNet_* folders under tmp_path, exported as env vars."""
    folders = {}
    for var in ("nnssl_raw", "nnssl_preprocessed", "nnssl_results", "nnUNet_raw", "nnUNet_preprocessed",
                "nnUNet_results"):
        folder = tmp_path / var
        folder.mkdir()
        monkeypatch.setenv(var, str(folder))
        folders[var] = folder
    return folders
