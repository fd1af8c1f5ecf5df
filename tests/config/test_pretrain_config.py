"""PretrainConfig: JSON round-trip, validation with clear messages."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnssl.config.pretrain import DeviceKind, PretrainConfig, Schedule, parse_key_values
from nnssl.errors import NnsslError


def test_round_trip(tmp_path: Path) -> None:
    config = PretrainConfig(dataset_name="Dataset500_X", patch_size=(32, 64, 64), schedule="poly", device="cpu",
                            method_kwargs={"mask_ratio": 0.6})
    assert config.schedule is Schedule.POLY and config.device is DeviceKind.CPU
    config.save(tmp_path / "c.json")
    assert PretrainConfig.load(tmp_path / "c.json") == config
    assert config.run_name == "mae__primus_s__nnsslPlans"


def test_unknown_key_and_version(tmp_path: Path) -> None:
    data = PretrainConfig(dataset_name="Dataset500_X").to_dict()
    (tmp_path / "a.json").write_text(json.dumps({**data, "lr_typo": 1}))
    with pytest.raises(NnsslError, match=r"a.json: unknown keys \['lr_typo'\]"):
        PretrainConfig.load(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({**data, "version": 99}))
    with pytest.raises(NnsslError, match="version 99"):
        PretrainConfig.load(tmp_path / "b.json")


@pytest.mark.parametrize(("changes", "message"), [
    ({"schedule": "cosin"}, "did you mean 'cosine'"),
    ({"device": "gpu"}, "unknown device 'gpu'"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"epochs": 5, "warmup_epochs": 5}, "warmup_epochs"),
    ({"lr": -1.0}, "lr > 0"),
    ({"num_workers": -1}, "num_workers"),
    ({"patch_size": (32, 32)}, "patch_size"),
    ({"seed": -3}, "seed"),
])
def test_bad_values(changes: dict, message: str) -> None:
    with pytest.raises(NnsslError, match=message):
        PretrainConfig(dataset_name="Dataset500_X", **changes)


@pytest.mark.parametrize(("epochs", "warmup"), [(1, 0), (12, 1), (100, 5), (1000, 5)])
def test_default_warmup(epochs: int, warmup: int) -> None:
    config = PretrainConfig(dataset_name="Dataset500_X", epochs=epochs)
    assert config.warmup_epochs == warmup
    assert PretrainConfig.from_dict(config.to_dict()).warmup_epochs == warmup


def test_parse_key_values() -> None:
    assert parse_key_values(["mask_ratio=0.6", "norm_target=true", "name=abc"]) == {
        "mask_ratio": 0.6, "norm_target": True, "name": "abc"}
    with pytest.raises(NnsslError, match="key=value"):
        parse_key_values(["mask_ratio"])
