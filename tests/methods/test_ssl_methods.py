"""Registry-driven tests over every compatible (method, tiny encoder) pair: contract, grads, config, learning."""
from __future__ import annotations

import io

import pytest
import torch
from ct_like import TEST_PATCH, ct_like_batch, encoder_family

from nnssl.errors import NnsslError
from nnssl.methods.base import PREVIEW_KEYS, MethodOutput
from nnssl.methods.registry import build_method, build_method_from_config, check_compatible, list_methods
from nnssl.models.registry import build_encoder, build_encoder_from_config

TINY_ENCODERS = ("vit_tiny", "swin_tiny")
BATCH = 2
TRAIN_STEPS = 30
# MONAI's Swin learns the rotation task slowly on CPU-sized runs; a higher rate shows the trend in 30 steps.
LEARNING_RATE = {"vit": 1e-3, "swin": 3e-3}
# Required drop of the loss on a fixed evaluation draw after TRAIN_STEPS (ViT pairs fall by 40-70%).
MAX_LOSS_RATIO = 0.95


def _pairs(swin_is_slow: bool = False) -> list[tuple[str, str]]:
    """Every compatible (method, tiny encoder) pair; Swin pairs marked slow where asked (30 CPU steps ~ 1 min)."""
    pairs = []
    for method in list_methods():
        for encoder in TINY_ENCODERS:
            try:
                check_compatible(method, encoder)
            except NnsslError:
                continue
            marks = [pytest.mark.slow] if swin_is_slow and encoder_family(encoder) == "swin" else []
            pairs.append(pytest.param(method, encoder, id=f"{method}-{encoder}", marks=marks))
    return pairs


def _build(method: str, encoder: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_method(method, build_encoder(encoder, 1, TEST_PATCH[encoder_family(encoder)]))


def _loss(model: torch.nn.Module, x: torch.Tensor, seed: int = 0) -> MethodOutput:
    return model.compute_loss(x, torch.Generator().manual_seed(seed))


def test_every_builtin_method_is_registered() -> None:
    assert list_methods() == ["dae", "mae", "simmim", "swin_ssl"]


def test_every_method_has_a_compatible_tiny_encoder() -> None:
    tested = {p.values[0] for p in _pairs()}
    assert tested == set(list_methods())


@pytest.mark.parametrize(("method", "encoder"), _pairs())
def test_output_contract_and_backward(method: str, encoder: str) -> None:
    model = _build(method, encoder)
    x = ct_like_batch(BATCH, model.encoder.patch_size)
    out = _loss(model, x)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.parts and all(v.ndim == 0 and not v.requires_grad for v in out.parts.values())
    assert tuple(out.previews) == PREVIEW_KEYS
    for volume in out.previews.values():
        assert volume.shape == x.shape and not volume.requires_grad
    out.loss.backward()
    stem = model.encoder.get_parameter(model.encoder.transfer.stem_keys[0])
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize(("method", "encoder"), _pairs())
def test_seeded_loss_and_state_dict_round_trip(method: str, encoder: str) -> None:
    model = _build(method, encoder)
    x = ct_like_batch(BATCH, model.encoder.patch_size)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other = _build(method, encoder, seed=1)
    assert not torch.equal(_loss(model, x).loss, _loss(other, x).loss)
    other.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    assert torch.equal(_loss(model, x).loss, _loss(other, x).loss)
    assert not torch.equal(_loss(model, x, seed=0).loss, _loss(model, x, seed=1).loss)


@pytest.mark.parametrize(("method", "encoder"), _pairs())
def test_config_rebuilds_the_same_module(method: str, encoder: str) -> None:
    model = _build(method, encoder)
    encoder_config, method_config = model.encoder.config(), model.config()
    assert method_config["name"] == method and encoder_config["name"] == encoder
    rebuilt = build_method_from_config(method_config, build_encoder_from_config(encoder_config))
    assert rebuilt.config() == method_config and rebuilt.encoder.config() == encoder_config
    assert type(rebuilt) is type(model)
    ours = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == ours


@pytest.mark.parametrize(("method", "encoder"), _pairs(swin_is_slow=True))
def test_loss_falls_on_ct_like_volume(method: str, encoder: str) -> None:
    model = _build(method, encoder)
    x = ct_like_batch(BATCH, model.encoder.patch_size)
    before = _loss(model, x, seed=123).loss.item()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE[encoder_family(encoder)])
    generator = torch.Generator().manual_seed(0)
    for _ in range(TRAIN_STEPS):
        optimizer.zero_grad()
        model.compute_loss(x, generator).loss.backward()
        optimizer.step()
    after = _loss(model, x, seed=123).loss.item()
    assert after < MAX_LOSS_RATIO * before, f"{method} x {encoder}: loss {before:.3f} -> {after:.3f}"


def test_mae_refuses_swin_with_the_reason() -> None:
    with pytest.raises(NnsslError, match="visible tokens only.*vit_tiny"):
        check_compatible("mae", "swin_b")
    with pytest.raises(NnsslError, match="visible tokens only"):
        build_method("mae", build_encoder("swin_tiny", 1, TEST_PATCH["swin"]))


def test_unknown_names_suggest() -> None:
    with pytest.raises(NnsslError, match="did you mean 'simmim'"):
        check_compatible("simim", "vit_tiny")
    with pytest.raises(NnsslError, match="did you mean 'primus_s'"):
        check_compatible("mae", "primus_x")
