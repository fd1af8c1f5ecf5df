"""Loading nnssl checkpoints into fine-tuning networks: equality, adaptation, device mapping and clear failures."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.serialization

from nnssl.config.pretrained import PretrainedBlock, file_sha256
from nnssl.errors import NnsslError
from nnssl.models.finetune_arch import finetune_architecture
from nnssl.training.checkpoint import load_pretrained_encoder
from nnssl_trainers.pretrained_weights import (
    MIN_LOADED_FRACTION,
    adapt_stem_weight,
    interpolate_pos_embed,
    load_encoder_into,
)
from nnssl_trainers.swin import SSLSwinTrainer
from nnssl_trainers.vit import SSLViTTrainer

PATCH = (32, 64, 64)
NUM_CLASSES = 2
TRAINER = {"vit_tiny": SSLViTTrainer, "swin_tiny": SSLSwinTrainer}


def _block(path: Path) -> PretrainedBlock:
    header, _ = load_pretrained_encoder(path)
    return PretrainedBlock.from_header(header, path, file_sha256(path))


def _network(block: PretrainedBlock, patch: tuple[int, int, int] = PATCH, in_channels: int = 1,
             **overrides: int) -> torch.nn.Module:
    arch = finetune_architecture(block.encoder)
    kwargs = {**arch.arch_kwargs, **overrides}
    trainer = TRAINER[block.encoder_name]
    return trainer.build_network(trainer.network_classes[arch.network_class_name], kwargs, patch, in_channels,
                                 NUM_CLASSES)


@pytest.mark.parametrize("encoder", sorted(TRAINER))
def test_encoder_weights_equal_checkpoint(encoder: str, tmp_path: Path, fake_pretraining: ModuleType) -> None:
    state = fake_pretraining.write_fake_checkpoint(tmp_path / "ckpt.pth", encoder, patch_size=PATCH)
    block = _block(tmp_path / "ckpt.pth")
    network = _network(block)
    trainer = TRAINER[encoder]
    prefix = block.transfer["encoder_prefix"]
    assert not all(torch.equal(network.state_dict()[prefix + k], v) for k, v in state.items())  # random before
    report = load_encoder_into(network, block, torch.device("cpu"), trainer.encoder_prefixes(network), PATCH)
    after = network.state_dict()
    assert all(torch.equal(after[prefix + k], v) for k, v in state.items())
    assert report.loaded_fraction == 1.0 and not report.missing and not report.unexpected


def test_pos_embed_interpolation_and_stem_adaptation(tmp_path: Path, fake_pretraining: ModuleType) -> None:
    state = fake_pretraining.write_fake_checkpoint(tmp_path / "ckpt.pth", "vit_tiny", patch_size=PATCH)
    block = _block(tmp_path / "ckpt.pth")
    patch, channels = (24, 56, 64), 2  # a grid the encoder never saw, and a second input channel
    network = _network(block, patch, in_channels=channels)
    report = load_encoder_into(network, block, torch.device("cpu"), SSLViTTrainer.encoder_prefixes(network), patch)
    assert len(report.adapted) == 2 and report.loaded_fraction == 1.0
    assert network.state_dict()["eva.pos_embed"].shape == (1, 3 * 7 * 8, state["eva.pos_embed"].shape[-1])
    stem = network.state_dict()["down_projection.proj.weight"]
    assert stem.shape[1] == channels
    x = torch.randn(1, 1, 8, 8, 8)
    one = torch.nn.functional.conv3d(x, state["down_projection.proj.weight"])
    two = torch.nn.functional.conv3d(x.repeat(1, channels, 1, 1, 1), stem)
    assert torch.allclose(one, two, atol=1e-5)  # same response when every channel carries the image


def test_pos_embed_follows_the_grid_when_the_token_count_is_unchanged(tmp_path: Path,
                                                                    fake_pretraining: ModuleType) -> None:
    state = fake_pretraining.write_fake_checkpoint(tmp_path / "ckpt.pth", "vit_tiny", patch_size=PATCH)
    block = _block(tmp_path / "ckpt.pth")
    patch = (PATCH[0], PATCH[2] * 2, PATCH[1] // 2)  # grid 4x16x4 instead of 4x8x8: same 128 tokens
    network = _network(block, patch)
    report = load_encoder_into(network, block, torch.device("cpu"), SSLViTTrainer.encoder_prefixes(network), patch)
    assert any(a.startswith("eva.pos_embed: grid (4, 8, 8) -> (4, 16, 4)") for a in report.adapted)
    loaded = network.state_dict()["eva.pos_embed"]
    assert loaded.shape == state["eva.pos_embed"].shape and not torch.equal(loaded, state["eva.pos_embed"])


def test_interpolate_pos_embed_identity_and_axes() -> None:
    grid, embed = (2, 3, 4), 6
    pos = torch.randn(1, 1 + 24, embed)  # one register token first
    assert torch.allclose(interpolate_pos_embed(pos, grid, grid, num_prefix_tokens=1), pos, atol=1e-6)
    swapped = interpolate_pos_embed(pos, grid, (2, 4, 3), num_prefix_tokens=1, axes=(0, 2, 1))
    volume = pos[:, 1:].reshape(2, 3, 4, embed)
    assert torch.allclose(swapped[:, 1:].reshape(2, 4, 3, embed), volume.permute(0, 2, 1, 3), atol=1e-6)
    assert torch.equal(swapped[:, :1], pos[:, :1])
    weight = torch.randn(4, 1, 2, 2, 2)
    assert torch.equal(adapt_stem_weight(weight, 1), weight)


def test_gpu_saved_checkpoint_loads_on_cpu(tmp_path: Path, fake_pretraining: ModuleType,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU-saved file tags every storage ``cuda:0``; we fake that tag on save (torch.save asks
    ``torch.serialization.location_tag``), which is exactly what a CUDA-less machine sees in a real GPU checkpoint."""
    path = tmp_path / "gpu.pth"
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        state = fake_pretraining.write_fake_checkpoint(path, "vit_tiny", patch_size=PATCH)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)  # what nnU-Net's -pretrained_weights does
    block = _block(path)
    network = _network(block)
    load_encoder_into(network, block, torch.device("cpu"), SSLViTTrainer.encoder_prefixes(network), PATCH)
    loaded = network.state_dict()["eva.blocks.0.attn.proj.weight"]
    assert loaded.device.type == "cpu" and torch.equal(loaded, state["eva.blocks.0.attn.proj.weight"])


def test_stale_link_and_corrupt_checkpoint_fail_clearly(tmp_path: Path, fake_pretraining: ModuleType) -> None:
    path = tmp_path / "ckpt.pth"
    fake_pretraining.write_fake_checkpoint(path, "vit_tiny", patch_size=PATCH)
    block = _block(path)
    network = _network(block)
    prefixes = SSLViTTrainer.encoder_prefixes(network)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated copy
    with pytest.raises(NnsslError, match=r"ckpt.pth changed since it was linked.*nnssl_transfer_plans"):
        load_encoder_into(network, block, torch.device("cpu"), prefixes, PATCH)
    relinked = dataclasses.replace(block, sha256=file_sha256(path))
    with pytest.raises(NnsslError, match=r"ckpt.pth is corrupt or truncated"):
        load_encoder_into(network, relinked, torch.device("cpu"), prefixes, PATCH)
    path.unlink()
    with pytest.raises(NnsslError, match="does not exist"):
        load_encoder_into(network, block, torch.device("cpu"), prefixes, PATCH)


def test_header_mismatch_and_too_few_weights(tmp_path: Path, fake_pretraining: ModuleType) -> None:
    path = tmp_path / "ckpt.pth"
    fake_pretraining.write_fake_checkpoint(path, "vit_tiny", patch_size=PATCH)
    block = _block(path)
    other = dataclasses.replace(block, encoder={**block.encoder, "name": "primus_s"})
    network = _network(block)
    with pytest.raises(NnsslError, match="checkpoint header has encoder 'vit_tiny' but the plans were built for"):
        load_encoder_into(network, other, torch.device("cpu"), SSLViTTrainer.encoder_prefixes(network), PATCH)
    deeper = _network(block, eva_depth=4)  # twice the blocks: half of the encoder has no pretrained weights
    with pytest.raises(NnsslError, match=f"need {MIN_LOADED_FRACTION:.0%}"):
        load_encoder_into(deeper, block, torch.device("cpu"), SSLViTTrainer.encoder_prefixes(deeper), PATCH)


def test_pretrained_skip_decoder_loads_all_but_its_output_layer(tmp_path: Path,
                                                                 fake_pretraining: ModuleType) -> None:
    state = fake_pretraining.write_fake_checkpoint(tmp_path / "ckpt.pth", "vit_tiny", patch_size=PATCH,
                                                   with_skip_decoder=True)
    decoder = torch.load(tmp_path / "ckpt.pth", weights_only=True)["decoder_state_dict"]
    block = _block(tmp_path / "ckpt.pth")
    network = _network(block)
    report = load_encoder_into(network, block, torch.device("cpu"), SSLViTTrainer.encoder_prefixes(network), PATCH)
    after = network.state_dict()
    body = {k: v for k, v in decoder.items() if not k.startswith("head.")}
    assert body and all(torch.equal(after[f"decoder.{k}"], v) for k, v in body.items())
    assert after["decoder.head.weight"].shape[0] == NUM_CLASSES  # the classes' layer stays new
    assert sorted(report.decoder_loaded) == sorted(f"decoder.{k}" for k in body)
    assert all(torch.equal(after[k], v) for k, v in state.items())


def test_patch_decode_network_ignores_a_pretrained_skip_decoder(tmp_path: Path,
                                                                fake_pretraining: ModuleType) -> None:
    fake_pretraining.write_fake_checkpoint(tmp_path / "ckpt.pth", "vit_tiny", patch_size=PATCH,
                                           with_skip_decoder=True)
    block = _block(tmp_path / "ckpt.pth")
    arch = finetune_architecture(block.encoder, vit_decoder="patch")
    network = SSLViTTrainer.build_network(SSLViTTrainer.network_classes[arch.network_class_name],
                                          dict(arch.arch_kwargs), PATCH, 1, NUM_CLASSES)
    report = load_encoder_into(network, block, torch.device("cpu"), SSLViTTrainer.encoder_prefixes(network), PATCH)
    assert report.loaded_fraction == 1.0 and not report.decoder_loaded and not report.unexpected
