"""Registry-driven encoder tests (STYLE §19): every registered name builds, transfers and rebuilds from config."""
from __future__ import annotations

import io
import json

import pytest
import torch

from nnssl.errors import NnsslError
from nnssl.models.registry import build_encoder, build_encoder_from_config, list_encoders
from nnssl.models.transfer import TransferContract

CONTRACT_NAMES = {"primus_s", "primus_b", "primus_m", "primus_l", "vit_tiny", "swin_t", "swin_s", "swin_b",
                  "swin_tiny"}
TINY = {"vit_tiny": (32, 32, 32), "swin_tiny": (64, 64, 64)}
GRID_MULTIPLE = {"vit": 8, "swin": 32}


def _family(name: str) -> str:
    return "swin" if name.startswith("swin") else "vit"


def test_contract_names_are_registered() -> None:
    assert set(list_encoders()) == CONTRACT_NAMES


@pytest.mark.parametrize("name", sorted(CONTRACT_NAMES))
def test_interface_attributes_and_transfer_keys(name: str) -> None:
    patch = (64, 64, 64)
    # Big ViTs on the meta device (structure only); MONAI Swin's constructor needs real tensors.
    device = "cpu" if _family(name) == "swin" or name in TINY else "meta"
    with torch.device(device):
        encoder = build_encoder(name, 1, patch)
    assert encoder.token_size == (GRID_MULTIPLE[_family(name)],) * 3
    assert encoder.grid_size == tuple(p // t for p, t in zip(patch, encoder.token_size, strict=True))
    keys = encoder.state_dict().keys()
    contract = encoder.transfer
    assert isinstance(contract, TransferContract) and set(contract.stem_keys) <= set(keys)
    assert contract.pos_embed_key is None or contract.pos_embed_key in keys
    assert TransferContract.from_dict(json.loads(json.dumps(contract.to_dict()))) == contract
    config = encoder.config()
    assert config["name"] == name and json.loads(json.dumps(config)) == config


@pytest.mark.parametrize("name", sorted(TINY))
def test_stem_keys_are_the_channel_dependent_ones(name: str) -> None:
    encoder = build_encoder(name, 1, TINY[name])
    one, two = encoder.state_dict(), build_encoder(name, 2, TINY[name]).state_dict()
    differing = {k for k in one if one[k].shape != two[k].shape}
    assert differing == set(encoder.transfer.stem_keys)


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_backward_round_trip_and_rebuild(name: str) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(name, 1, TINY[name])
    x = torch.randn(2, 1, *TINY[name])
    tokens = encoder.forward_features(x)
    assert tokens.shape == (2, encoder.num_tokens, encoder.embed_dim)
    tokens.square().mean().backward()
    assert all(p.grad is not None for p in encoder.parameters())

    buffer = io.BytesIO()
    torch.save(encoder.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    rebuilt = build_encoder_from_config(json.loads(json.dumps(encoder.config())))
    assert type(rebuilt) is type(encoder) and rebuilt.config() == encoder.config()
    with torch.no_grad():
        assert not torch.allclose(rebuilt(x), tokens)
        rebuilt.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
        torch.testing.assert_close(rebuilt(x), tokens)


def test_unknown_encoder_suggests() -> None:
    with pytest.raises(NnsslError, match="did you mean 'swin_b'"):
        build_encoder("swin_bb", 1, (64, 64, 64))
