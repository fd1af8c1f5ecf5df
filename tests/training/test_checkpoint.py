"""Checkpoint contract: atomic save, weights_only round-trip, clear errors for bad files."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from nnssl.errors import NnsslError
from nnssl.training.checkpoint import (
    FORMAT_VERSION,
    build_header,
    capture_rng_state,
    load_checkpoint,
    load_pretrained_encoder,
    restore_rng_state,
    save_checkpoint,
)


def _checkpoint() -> dict:
    encoder = torch.nn.Linear(4, 3)
    model = torch.nn.Sequential(encoder, torch.nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    header = build_header(
        method={"name": "mae", "class": "nnssl.methods.mae.MAE", "kwargs": {"mask_ratio": 0.75}},
        encoder={"name": "vit_tiny", "class": "nnssl.models.encoders.vit.ViTEncoder", "kwargs": {"embed_dim": 96}},
        plans={"dataset_name": "Dataset500_X", "spacing": [1.0, 1.0, 1.0]},
        transfer={"encoder_prefix": "", "stem_keys": ["down_projection.proj.weight"], "pos_embed_key": "eva.pos_embed"},
        patch_size=(32, 32, 32), token_size=(8, 8, 8), num_input_channels=1)
    return {"format_version": FORMAT_VERSION, "header": header, "encoder_state_dict": encoder.state_dict(),
            "model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
            "scheduler_state_dict": scheduler.state_dict(), "scaler_state_dict": None, "epoch": 3,
            "rng_state": capture_rng_state(), "history": {"loss": [1.0, 0.5], "lr": [1e-3, 1e-3]}}


def test_round_trip_weights_only(tmp_path: Path) -> None:
    checkpoint = _checkpoint()
    path = tmp_path / "checkpoint_latest.pth"
    save_checkpoint(checkpoint, path)
    # The fine-tuning side reads it with plain torch.load(weights_only=True): no custom classes inside.
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["header"]["patch_size"] == [32, 32, 32]
    loaded = load_checkpoint(path)
    for key, value in checkpoint["model_state_dict"].items():
        assert torch.equal(loaded["model_state_dict"][key], value)
    assert loaded["optimizer_state_dict"]["state"][0]["exp_avg"].shape == (3, 4)
    assert loaded["epoch"] == 3 and loaded["history"]["loss"] == [1.0, 0.5]
    header, encoder_state = load_pretrained_encoder(path)
    assert header["encoder"]["name"] == "vit_tiny"
    assert set(encoder_state) == {"weight", "bias"}
    assert not list(tmp_path.glob("*.tmp")), "temp file left behind"


def test_rng_state_round_trip(tmp_path: Path) -> None:
    checkpoint = _checkpoint()
    path = tmp_path / "c.pth"
    save_checkpoint(checkpoint, path)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(3)  # move every generator on
    restore_rng_state(load_checkpoint(path)["rng_state"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NnsslError, match="no checkpoint at .*nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")


@pytest.mark.parametrize("cut", [0.5, 0.05])
def test_truncated_file(tmp_path: Path, cut: float) -> None:
    path = tmp_path / "checkpoint_final.pth"
    save_checkpoint(_checkpoint(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(NnsslError, match="checkpoint_final.pth is corrupt or truncated"):
        load_checkpoint(path)


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "x.pth"
    path.write_text("hello")
    with pytest.raises(NnsslError, match="corrupt"):
        load_checkpoint(path)


def test_not_nnssl_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save({"network_weights": {}}, path)  # looks like an nnU-Net checkpoint
    with pytest.raises(NnsslError, match="not an nnssl pretraining checkpoint"):
        load_checkpoint(path)


def test_unsupported_version(tmp_path: Path) -> None:
    checkpoint = _checkpoint()
    checkpoint["format_version"] = FORMAT_VERSION + 1
    path = tmp_path / "c.pth"
    save_checkpoint(checkpoint, path)
    with pytest.raises(NnsslError, match="format_version 2"):
        load_checkpoint(path)


def test_save_refuses_incomplete(tmp_path: Path) -> None:
    with pytest.raises(NnsslError, match="missing"):
        save_checkpoint({"format_version": 1, "header": {}, "encoder_state_dict": {}}, tmp_path / "c.pth")
    assert not list(tmp_path.iterdir())


def test_failed_save_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint_latest.pth"
    save_checkpoint(_checkpoint(), path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(_checkpoint(), path)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))
