"""``-tr NAME`` discovery through ``nnUNet_extTrainer`` with nnunetv2's own search, and no clashes with its names."""
from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

import nnunetv2
import pytest
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

import nnssl_trainers.ext

EXT = Path(nnssl_trainers.ext.FOLDER)
SHIM = "nnssl_trainers_ext"


def _exported() -> list[str]:
    spec = importlib.util.spec_from_file_location("nnssl_tests_shim", EXT / f"{SHIM}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.__all__)


def test_ext_folder_holds_one_uniquely_named_module() -> None:
    modules = sorted(p.stem for p in EXT.glob("*.py") if p.name != "__init__.py")
    assert modules == [SHIM]
    assert not [p for p in EXT.iterdir() if p.is_dir() and p.name != "__pycache__"]


def test_shim_import_has_no_side_effects(capfd: pytest.CaptureFixture) -> None:
    names = _exported()
    out, err = capfd.readouterr()
    assert names and out == "" and err == ""


@pytest.mark.parametrize("name", _exported())
def test_nnunet_finds_every_trainer(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", str(EXT))
    trainer = recursive_find_trainer_class_by_name(name)
    assert trainer.__name__ == name and issubclass(trainer, nnUNetTrainer)
    assert list(inspect.signature(trainer.__init__).parameters) == ["self", "plans", "configuration", "fold",
                                                                    "dataset_json", "device"]
    assert SHIM not in sys.modules  # nnunetv2 drops the shim again; the trainer classes live in nnssl_trainers


@pytest.mark.parametrize("name", _exported())
def test_no_name_clash_with_nnunetv2(name: str) -> None:
    folder = str(Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer")
    assert recursive_find_python_class(folder, name, "nnunetv2.training.nnUNetTrainer") is None
