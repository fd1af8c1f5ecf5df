"""Per-method behaviour: masked-only scoring, encoder savings, toggles and refusals."""
from __future__ import annotations

import pytest
import torch
from ct_like import TEST_PATCH, ct_like_batch

from nnssl.errors import NnsslError
from nnssl.methods.masking import random_token_mask
from nnssl.methods.registry import build_method
from nnssl.models.flops import count_flops, flops_per_sample
from nnssl.models.patchify import tokens_to_voxel_mask
from nnssl.models.registry import build_encoder

SEED = 7
OFFSET = 100.0  # added to predictions of visible voxels: must not change a masked loss


def _model(method: str, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_method(method, build_encoder("vit_tiny", 1, TEST_PATCH["vit"]), **kwargs)


def _loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.compute_loss(x, torch.Generator().manual_seed(SEED)).loss


def test_mae_scores_only_hidden_tokens() -> None:
    model = _model("mae")
    x = ct_like_batch(2, model.encoder.patch_size)
    loss = _loss(model, x)
    visible = ~_mask(model, 2, SEED)[..., None]  # (B, N, 1)
    handle = model.decoder.register_forward_hook(lambda _m, _a, out: out + OFFSET * visible.float())
    shifted = _loss(model, x)
    handle.remove()
    torch.testing.assert_close(shifted, loss)
    handle = model.decoder.register_forward_hook(lambda _m, _a, out: out + OFFSET * (~visible).float())
    assert _loss(model, x) > loss + 1
    handle.remove()


@pytest.mark.parametrize("method", ["simmim"])
def test_simmim_scores_only_hidden_voxels(method: str) -> None:
    model = _model(method)
    x = ct_like_batch(2, model.encoder.patch_size)
    loss = _loss(model, x)
    visible = ~tokens_to_voxel_mask(_mask(model, 2, SEED), model.encoder.grid_size, model.encoder.token_size)
    handle = model.head.register_forward_hook(lambda _m, _a, out: out + OFFSET * visible.float())
    shifted = _loss(model, x)
    handle.remove()
    torch.testing.assert_close(shifted, loss)
    handle = model.head.register_forward_hook(lambda _m, _a, out: out + OFFSET * (~visible).float())
    assert _loss(model, x) > loss + 1
    handle.remove()


def test_mae_norm_pix_and_block_options_run() -> None:
    model = _model("mae", norm_pix_loss=True, block_size=2)
    out = model.compute_loss(ct_like_batch(2, model.encoder.patch_size), torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and model.config()["kwargs"]["block_size"] == 2


def test_mae_encoder_saving_at_075() -> None:
    torch.manual_seed(0)
    x = ct_like_batch(2, (32, 32, 32))
    mae, simmim = _model("mae", mask_ratio=0.75), _model("simmim", mask_ratio=0.75)
    with torch.no_grad():
        mae_encoder = count_flops(lambda: mae.encoder.forward_features(x, _mask(mae, 2)))
        full_encoder = count_flops(lambda: simmim.encoder.forward_features(x))
    assert mae_encoder < 0.3 * full_encoder  # 25% of the tokens, stem included
    assert flops_per_sample(mae, x, backward=True) > flops_per_sample(mae, x)


def test_mae_method_is_3x_cheaper_than_simmim_on_primus_s() -> None:
    torch.manual_seed(0)
    x = ct_like_batch(1, (32, 32, 32))
    mae = build_method("mae", build_encoder("primus_s", 1, (32, 32, 32)), mask_ratio=0.75)
    simmim = build_method("simmim", build_encoder("primus_s", 1, (32, 32, 32)), mask_ratio=0.75)
    assert 3 * flops_per_sample(mae, x) < flops_per_sample(simmim, x)


def _mask(model: torch.nn.Module, batch: int, seed: int = 0) -> torch.Tensor:
    """(B, N) the mask the method draws with a generator seeded ``seed``."""
    return random_token_mask(batch, model.encoder.grid_size, model.mask_ratio, torch.Generator().manual_seed(seed),
                             "cpu", model.block_size)


def test_linear_flops_are_counted_exactly() -> None:
    layer = torch.nn.Linear(16, 8, bias=False)
    assert count_flops(lambda: layer(torch.randn(4, 16))) == 2 * 4 * 16 * 8


@pytest.mark.parametrize("toggle", ["use_local_mask", "use_noise", "use_down_up"])
def test_dae_each_perturbation_alone(toggle: str) -> None:
    flags = {"use_local_mask": False, "use_noise": False, "use_down_up": False, toggle: True}
    model = _model("dae", **flags)
    x = ct_like_batch(1, model.encoder.patch_size)
    out = model.compute_loss(x, torch.Generator().manual_seed(0))
    assert not torch.equal(out.previews["corrupted"], x) and torch.equal(out.previews["target"], x)


def test_dae_without_perturbation_is_refused() -> None:
    with pytest.raises(NnsslError, match="at least one perturbation"):
        _model("dae", use_local_mask=False, use_noise=False, use_down_up=False)


def test_swin_ssl_parts_and_refusal_of_non_square_plane() -> None:
    model = _model("swin_ssl")
    out = model.compute_loss(ct_like_batch(2, model.encoder.patch_size), torch.Generator().manual_seed(0))
    assert set(out.parts) == {"inpaint", "rotation", "contrastive"}
    torch.testing.assert_close(out.loss.detach(), sum(out.parts.values()))
    weighted = _model("swin_ssl", rotation_weight=0.0, contrastive_weight=2.0)
    out = weighted.compute_loss(ct_like_batch(2, model.encoder.patch_size), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.loss.detach(), out.parts["inpaint"] + 2 * out.parts["contrastive"])
    with pytest.raises(NnsslError, match="H == W"):
        build_method("swin_ssl", build_encoder("vit_tiny", 1, (32, 32, 64)))


@pytest.mark.parametrize("method", ["simmim", "dae"])
def test_skip_head_is_the_finetuning_decoder_and_sees_the_corrupted_image(method: str) -> None:
    from nnssl.methods.registry import build_method
    from nnssl.models.decoders.skip_decoder import SkipDecoder
    from nnssl.models.registry import build_encoder

    torch.manual_seed(0)
    model = build_method(method, build_encoder("vit_tiny", 1, (32, 32, 32)), head="skip")
    assert isinstance(model.transferable_decoder(), SkipDecoder)
    x = torch.randn(2, 1, 32, 32, 32)
    seen = {}

    def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen["image"] = args[0]

    model.head.proj.image_path[0].register_forward_hook(record)
    output = model.compute_loss(x, torch.Generator().manual_seed(0))
    output.loss.backward()
    assert torch.equal(seen["image"], output.previews["corrupted"])  # never the clean image: nothing leaks
    assert model.head.proj.image_path[0].conv.weight.grad.abs().sum() > 0
    assert build_method(method, build_encoder("vit_tiny", 1, (32, 32, 32))).transferable_decoder() is None
