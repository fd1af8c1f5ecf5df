"""Swin encoder: loads under ``swinViT.`` into MONAI SwinUNETR with identical features; grid 32; masking."""
from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SwinUNETR

from nnssl.errors import NnsslError
from nnssl.methods.masking import random_token_mask
from nnssl.models.encoders.swin import SWIN_VARIANTS
from nnssl.models.registry import build_encoder

PATCH = (64, 64, 96)  # non-cubic on purpose; the grid is 32
NUM_CLASSES = 2


def _swin_unetr_for(encoder: torch.nn.Module) -> SwinUNETR:
    kw = encoder.config()["kwargs"]
    return SwinUNETR(in_channels=kw["in_channels"], out_channels=NUM_CLASSES, patch_size=kw["stem_patch"],
                     depths=tuple(kw["depths"]), num_heads=tuple(kw["num_heads"]), window_size=kw["window_size"],
                     feature_size=kw["feature_size"])


@pytest.mark.parametrize("name", sorted(SWIN_VARIANTS))
def test_keys_load_under_the_transfer_prefix(name: str) -> None:
    encoder = build_encoder(name, 1, PATCH)  # MONAI's constructor calls .item(): no meta device
    net = _swin_unetr_for(encoder)
    assert encoder.transfer.encoder_prefix == "swinViT."
    theirs = {k: v.shape for k, v in net.state_dict().items() if k.startswith("swinViT.")}
    ours = {k: v.shape for k, v in encoder.transfer.to_finetune_keys(encoder.state_dict()).items()}
    assert ours == theirs


def test_weights_give_swin_unetr_hidden_states() -> None:
    torch.manual_seed(0)
    encoder = build_encoder("swin_tiny", 2, PATCH).eval()
    net = _swin_unetr_for(encoder).eval()
    result = net.load_state_dict(encoder.transfer.to_finetune_keys(encoder.state_dict()), strict=False)
    assert not result.unexpected_keys
    assert not [k for k in result.missing_keys if k.startswith("swinViT.")]
    x = torch.randn(1, 2, *PATCH)
    reference = net.swinViT(x, net.normalize)
    ours = encoder.forward_intermediates(x, range(len(reference)))
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b)
    tokens = encoder.forward_features(x)
    assert tokens.shape == (1, 2 * 2 * 3, encoder.embed_dim) and encoder.grid_size == (2, 2, 3)
    torch.testing.assert_close(tokens, reference[-1].flatten(2).transpose(1, 2))


def test_grid_is_32() -> None:
    with pytest.raises(NnsslError, match=r"nearest valid sizes: \(32, 64, 64\) or \(64, 64, 64\)") as error:
        build_encoder("swin_tiny", 1, (48, 64, 64))
    assert "swin_tiny" in str(error.value)


def test_mask_token_hides_the_voxels_and_token_drop_is_refused() -> None:
    torch.manual_seed(0)
    encoder = build_encoder("swin_tiny", 1, PATCH).eval()
    mask = random_token_mask(1, encoder.grid_size, 0.5, torch.Generator().manual_seed(0), "cpu")
    x = torch.randn(1, 1, *PATCH)
    token = torch.randn(encoder.stem_dim)
    hidden = mask.reshape(1, 1, 2, 1, 2, 1, 3, 1).expand(1, 1, 2, 32, 2, 32, 3, 32).reshape_as(x)
    tokens = encoder.forward_features(x, mask, token)
    assert tokens.shape == (1, encoder.num_tokens, encoder.embed_dim)
    changed = torch.where(hidden, torch.randn_like(x), x)
    torch.testing.assert_close(encoder.forward_features(changed, mask, token), tokens)
    with pytest.raises(NnsslError, match="cannot drop tokens"):
        encoder.forward_features(x, mask)
