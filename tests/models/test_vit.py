"""ViT encoder: 1:1 with DNA Primus (keys, shapes, numbers), token drop, mask tokens, patch-size errors."""
from __future__ import annotations

import pytest
import torch
from dynamic_network_architectures.architectures import primus as dna_primus
from dynamic_network_architectures.architectures.primus import Primus

from nnssl.errors import NnsslError
from nnssl.methods.masking import random_token_mask
from nnssl.models.encoders.vit import TOKEN_SIZE, VIT_VARIANTS
from nnssl.models.registry import build_encoder

PATCH = (32, 32, 48)  # non-cubic on purpose
BIG_PATCH = (64, 64, 64)
NUM_CLASSES = 3


def _primus_for(encoder: torch.nn.Module, patch: tuple[int, int, int], **extra: int) -> Primus:
    kw = encoder.config()["kwargs"]
    return Primus(kw["in_channels"], kw["embed_dim"], TOKEN_SIZE, NUM_CLASSES, kw["depth"], kw["num_heads"],
                  input_shape=patch, **extra)


def test_variant_table_matches_dna() -> None:
    ours = {name[-1].upper(): v for name, v in VIT_VARIANTS.items() if name.startswith("primus_")}
    dna = {k: {"embed_dim": v["embed_dim"], "depth": v["eva_depth"], "num_heads": v["eva_numheads"]}
           for k, v in dna_primus._PRIMUS_CONFIGS.items()}
    assert ours == dna


@pytest.mark.parametrize("name", ["primus_s", "primus_b", "primus_m", "primus_l"])
def test_big_variants_have_primus_keys_and_shapes(name: str) -> None:
    with torch.device("meta"):  # no memory, no init cost
        encoder = build_encoder(name, 1, BIG_PATCH)
        primus = _primus_for(encoder, BIG_PATCH)
    ours = {k: v.shape for k, v in encoder.state_dict().items()}
    theirs = {k: v.shape for k, v in primus.state_dict().items() if k.startswith(("down_projection.", "eva."))}
    assert ours == theirs


@pytest.mark.parametrize("registers", [0, 2])
@pytest.mark.parametrize("in_channels", [1, 2])
def test_weights_load_into_primus_and_give_the_same_features(registers: int, in_channels: int) -> None:
    torch.manual_seed(0)
    encoder = build_encoder("vit_tiny", in_channels, PATCH, num_register_tokens=registers).eval()
    primus = _primus_for(encoder, PATCH, num_register_tokens=registers).eval()
    result = primus.load_state_dict(encoder.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(k.startswith("up_projection.") or k == "mask_token" for k in result.missing_keys)
    x = torch.randn(2, in_channels, *PATCH)
    tokens = primus.down_projection(x).flatten(2).transpose(1, 2)  # Primus' own rearrange order
    if registers:
        tokens = torch.cat([primus.register_tokens.expand(2, -1, -1), tokens], dim=1)
    reference, _ = primus.eva(tokens)
    torch.testing.assert_close(encoder.forward_features(x), reference[:, registers:])


def test_token_drop_sees_only_visible_voxels() -> None:
    torch.manual_seed(0)
    encoder = build_encoder("vit_tiny", 1, PATCH).eval()
    mask = random_token_mask(2, encoder.grid_size, 0.75, torch.Generator().manual_seed(0), "cpu")
    x = torch.randn(2, 1, *PATCH)
    tokens = encoder.forward_features(x, mask)
    assert tokens.shape == (2, encoder.num_tokens - int(mask[0].sum()), encoder.embed_dim)
    patches = x.reshape(2, 1, 4, 8, 4, 8, 6, 8)  # token (i, j, k) = [:, :, i, :, j, :, k, :]
    hidden = mask.reshape(2, 1, 4, 1, 4, 1, 6, 1).expand_as(patches)
    changed = torch.where(hidden, torch.randn_like(patches), patches).reshape_as(x)
    torch.testing.assert_close(encoder.forward_features(changed, mask), tokens)
    changed_visible = torch.where(hidden, patches, patches + 1).reshape_as(x)
    assert not torch.allclose(encoder.forward_features(changed_visible, mask), tokens)


def test_empty_mask_equals_no_mask_and_mask_token_path() -> None:
    torch.manual_seed(0)
    encoder = build_encoder("vit_tiny", 1, PATCH).eval()
    x = torch.randn(1, 1, *PATCH)
    none_hidden = torch.zeros(1, encoder.num_tokens, dtype=torch.bool)
    torch.testing.assert_close(encoder.forward_features(x, none_hidden), encoder.forward_features(x))
    mask = random_token_mask(1, encoder.grid_size, 0.5, torch.Generator().manual_seed(0), "cpu")
    token = torch.randn(encoder.stem_dim)
    replaced = encoder.forward_features(x, mask, token)
    assert replaced.shape == (1, encoder.num_tokens, encoder.embed_dim)
    assert not torch.allclose(replaced, encoder.forward_features(x))


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    encoder = build_encoder("vit_tiny", 1, PATCH)
    x = torch.randn(1, 1, *PATCH)
    mask = random_token_mask(1, encoder.grid_size, 0.5, torch.Generator().manual_seed(0), "cpu")
    encoder.forward_features(x, mask).square().mean().backward()
    plain = [p.grad.clone() for p in encoder.parameters()]
    encoder.zero_grad()
    encoder.eva.set_grad_checkpointing(True)
    encoder.forward_features(x, mask).square().mean().backward()
    for a, p in zip(plain, encoder.parameters(), strict=True):
        torch.testing.assert_close(p.grad, a)


def test_forward_intermediates() -> None:
    encoder = build_encoder("vit_tiny", 1, PATCH)
    maps = encoder.forward_intermediates(torch.randn(2, 1, *PATCH), [0, -1])
    assert [m.shape for m in maps] == [(2, encoder.embed_dim, *encoder.grid_size)] * 2


@pytest.mark.parametrize(("patch", "suggestion"), [((30, 32, 32), "(32, 32, 32)"), ((4, 64, 70), "(8, 64, 72)")])
def test_bad_patch_size_names_the_nearest_valid_sizes(patch: tuple[int, int, int], suggestion: str) -> None:
    with pytest.raises(NnsslError, match="nearest valid sizes") as error:
        build_encoder("vit_tiny", 1, patch)
    assert suggestion in str(error.value) and "vit_tiny" in str(error.value)


def test_bad_head_width_is_refused() -> None:
    with pytest.raises(NnsslError, match="multiple of 6"):
        build_encoder("vit_tiny", 1, PATCH, num_heads=3)
