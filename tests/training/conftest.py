"""Fixtures for the pretraining tests: a tiny preprocessed dataset in ``$nnssl_preprocessed``."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


def load_tiny_data() -> ModuleType:
    """``tests/training/tiny_data.py`` by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("nnssl_tests_tiny_data", Path(__file__).with_name("tiny_data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_preprocessed(nnssl_env: dict[str, Path]) -> Path:
    """The tiny dataset (3 cases, 32^3 planned patch) inside ``$nnssl_preprocessed``."""
    return load_tiny_data().write_tiny_preprocessed(nnssl_env["nnssl_preprocessed"])
