"""Load an nnssl encoder checkpoint into a fine-tuning network: verify, map keys, adapt shapes, report.

nnU-Net's ``-pretrained_weights`` wants every key with an identical shape and loads without ``map_location``, so it
cannot take an encoder-only, possibly GPU-saved SSL checkpoint. This module loads it itself:

1. the file's sha256 must equal the one recorded by ``nnssl_transfer_plans`` (else the link is stale);
2. ``torch.load(..., map_location=<trainer device>, weights_only=True)`` through ``nnssl.training.checkpoint``;
3. the header's encoder must be the one the plans were built for;
4. keys get the encoder prefix of the transfer contract; the position embedding is interpolated to the new token
   grid; the stem is adapted to the channel count;
5. at least :data:`MIN_LOADED_FRACTION` of the network's encoder parameters must load;
6. a pretrained ``SkipDecoder`` (``simmim`` with ``head=skip``) loads into the network's decoder, all but its output
   convolution.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nnssl.config.pretrained import PretrainedBlock, file_sha256
from nnssl.errors import NnsslError
from nnssl.models.decoders.skip_decoder import HEAD_KEY
from nnssl.models.primus_skip import DECODER_KEY
from nnssl.models.transfer import TransferContract
from nnssl.training.checkpoint import load_checkpoint, pretrained_decoder_state

MIN_LOADED_FRACTION = 0.95  # share of encoder parameters (by element count) that must load
RELINK_HINT = "re-run `nnssl_transfer_plans -d <downstream id> -pd <pretraining id>` to link the checkpoint again"


@dataclass
class LoadReport:
    """What happened to each key. ``loaded_fraction`` counts parameter elements of the network's encoder."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    loaded_fraction: float = 0.0
    decoder_loaded: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"pretrained encoder: {len(self.loaded)} tensors loaded ({self.loaded_fraction:.1%} of encoder "
                f"parameters), {len(self.missing)} missing {self.missing[:8]}, {len(self.unexpected)} unexpected "
                f"{self.unexpected[:8]}, adapted {self.adapted}; pretrained decoder: {len(self.decoder_loaded)} "
                "tensors loaded")


def interpolate_pos_embed(pos_embed: torch.Tensor, old_grid: Sequence[int], new_grid: Sequence[int],
                          num_prefix_tokens: int = 0, axes: Sequence[int] = (0, 1, 2)) -> torch.Tensor:
    """Trilinearly resample a learned absolute position embedding to another token grid.

    Args:
        pos_embed: (1, R + N_old, E), R prefix tokens first, N_old = prod(old_grid) in z-major order.
        old_grid: tokens per axis of the pretraining patch, in the pretraining's axis order.
        new_grid: tokens per axis of the fine-tuning patch, in the network's axis order; any aspect ratio.
        num_prefix_tokens: R (register tokens), copied unchanged.
        axes: nnU-Net's ``transpose_forward``: network axis i is pretraining axis ``axes[i]``.

    Returns:
        (1, R + N_new, E).
    """
    prefix, grid_tokens = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    if grid_tokens.shape[1] != math.prod(old_grid):
        raise ValueError(f"pos_embed has {grid_tokens.shape[1]} grid tokens, old grid {tuple(old_grid)} needs "
                         f"{math.prod(old_grid)}")
    embed_dim = grid_tokens.shape[-1]
    volume = grid_tokens.reshape(1, *old_grid, embed_dim).permute(0, 4, 1, 2, 3)  # (1, E, gz, gy, gx)
    volume = volume.permute(0, 1, *(2 + a for a in axes))  # (1, E, g0, g1, g2) in network axis order
    volume = F.interpolate(volume.float(), size=tuple(new_grid), mode="trilinear", align_corners=False)
    grid_tokens = volume.permute(0, 2, 3, 4, 1).reshape(1, -1, embed_dim).to(pos_embed.dtype)  # (1, N_new, E)
    return torch.cat((prefix, grid_tokens), dim=1)  # (1, R + N_new, E)


def adapt_stem_weight(weight: torch.Tensor, in_channels: int, axes: Sequence[int] = (0, 1, 2)) -> torch.Tensor:
    """Stem conv weight for another input channel count (channel mean, repeated, scaled to keep the response) and
    axis order.

    Args:
        weight: (E, C_old, kz, ky, kx) in the pretraining's axis order.
        in_channels: C_new.
        axes: nnU-Net's ``transpose_forward`` (network axis i is pretraining axis ``axes[i]``).

    Returns:
        (E, C_new, k0, k1, k2); equals ``weight`` when C_new == C_old and ``axes`` is the identity.
    """
    weight = weight.permute(0, 1, *(2 + a for a in axes))  # (E, C_old, k0, k1, k2)
    old_channels = weight.shape[1]
    if old_channels == in_channels:
        return weight
    mean = weight.mean(dim=1, keepdim=True)  # (E, 1, kz, ky, kx)
    return mean.repeat(1, in_channels, *([1] * (weight.ndim - 2))) * (old_channels / in_channels)


def verify_checkpoint_file(block: PretrainedBlock) -> Path:
    """The checkpoint must exist and still have the sha256 recorded when it was linked.

    Raises:
        NnsslError: missing file or changed content, naming the file and the fix.
    """
    path = Path(block.checkpoint)
    if not path.is_file():
        raise NnsslError(f"pretrained checkpoint {path} (linked by nnssl_transfer_plans) does not exist; "
                         f"restore it or {RELINK_HINT}")
    digest = file_sha256(path)
    if digest != block.sha256:
        raise NnsslError(f"pretrained checkpoint {path} changed since it was linked (sha256 {digest[:12]}... != "
                         f"recorded {block.sha256[:12]}...); {RELINK_HINT}")
    return path


def load_encoder_into(network: nn.Module, block: PretrainedBlock, device: torch.device,
                      encoder_prefixes: Sequence[str], patch_size: Sequence[int],
                      transpose_forward: Sequence[int] = (0, 1, 2)) -> LoadReport:
    """Load the linked checkpoint's encoder into ``network`` (in place) and report.

    Args:
        network: the fine-tuning network (unwrapped from DDP / torch.compile).
        block: the ``pretrained`` block from the plans or the link file.
        device: where the tensors are mapped (the trainer's device).
        encoder_prefixes: network keys starting with one of these belong to the encoder.
        patch_size: the fine-tuning patch size in the network's axis order, for the position-embedding grid.
        transpose_forward: nnU-Net's axis order relative to the pretraining's (identity for usual CT).

    Raises:
        NnsslError: stale link, corrupt file, header mismatch, or under 95% of the encoder loaded.
    """
    path = verify_checkpoint_file(block)
    checkpoint = load_checkpoint(path, map_location=device)
    header, encoder_state = checkpoint["header"], checkpoint["encoder_state_dict"]
    for key in ("name", "class"):
        if header["encoder"].get(key) != block.encoder.get(key):
            raise NnsslError(f"{path}: checkpoint header has encoder {header['encoder'].get(key)!r} but the plans "
                             f"were built for {block.encoder.get(key)!r}; {RELINK_HINT}")
    transfer = TransferContract.from_dict(header["transfer"])
    target = network.state_dict()
    report = LoadReport()
    mapped = transfer.to_finetune_keys(encoder_state)  # network keys -> tensors
    state: dict[str, torch.Tensor] = {}
    stem_keys = {transfer.encoder_prefix + key for key in transfer.stem_keys}
    pos_key = transfer.encoder_prefix + transfer.pos_embed_key if transfer.pos_embed_key else None
    num_prefix = int(block.encoder.get("kwargs", {}).get("num_register_tokens", 0))
    axes = tuple(int(a) for a in transpose_forward)
    old_grid = [p // t for p, t in zip(block.patch_size, block.token_size, strict=True)]
    new_grid = [p // block.token_size[a] for p, a in zip(patch_size, axes, strict=True)]
    for key, value in mapped.items():
        if key not in target:
            report.unexpected.append(key)
            continue
        if key == pos_key and (old_grid != new_grid or axes != (0, 1, 2)):  # equal token counts can differ in grid
            value = interpolate_pos_embed(value, old_grid, new_grid, num_prefix, axes)
            report.adapted.append(f"{key}: grid {tuple(old_grid)} -> {tuple(new_grid)}")
        elif key in stem_keys and (value.shape != target[key].shape or axes != (0, 1, 2)):
            value = adapt_stem_weight(value, target[key].shape[1], axes)
            report.adapted.append(f"{key}: {block.num_input_channels} -> {target[key].shape[1]} input channels")
        if value.shape != target[key].shape:
            report.unexpected.append(f"{key} (shape {tuple(value.shape)} != {tuple(target[key].shape)})")
            continue
        state[key] = value.to(device=target[key].device, dtype=target[key].dtype)
        report.loaded.append(key)
    params = dict(network.named_parameters())
    encoder_params = {k: p for k, p in params.items() if k.startswith(tuple(encoder_prefixes)) or k in mapped}
    report.missing = sorted(k for k in encoder_params if k not in state)
    total = sum(p.numel() for p in encoder_params.values())
    report.loaded_fraction = sum(encoder_params[k].numel() for k in state if k in encoder_params) / max(total, 1)
    if report.loaded_fraction < MIN_LOADED_FRACTION:
        raise NnsslError(f"{path}: only {report.loaded_fraction:.1%} of the encoder parameters load into this "
                         f"network (need {MIN_LOADED_FRACTION:.0%}); missing {report.missing[:5]}, unexpected "
                         f"{report.unexpected[:5]}. The checkpoint's encoder ({block.encoder_name}) does not fit this "
                         f"trainer's network; {RELINK_HINT}")
    _add_decoder(state, pretrained_decoder_state(checkpoint), target, axes, report)
    network.load_state_dict(state, strict=False)
    return report


def _add_decoder(state: dict[str, torch.Tensor], decoder_state: dict[str, torch.Tensor],
                 target: dict[str, torch.Tensor], axes: tuple[int, ...], report: LoadReport) -> None:
    """Add a pretrained ``SkipDecoder`` (``simmim``/``dae`` with ``head=skip``) to ``state``, all but its last 1x1
    convolution, whose classes differ from the reconstructed channels. Nothing when the network has no such decoder
    or the plans transpose the axes (its 3x3x3 kernels would need permuting)."""
    mapped = {f"{DECODER_KEY}.{key}": value for key, value in decoder_state.items()
              if not key.startswith(f"{HEAD_KEY}.")}
    if not mapped or not any(key.startswith(f"{DECODER_KEY}.") for key in target):
        return
    if axes != (0, 1, 2):
        report.adapted.append("pretrained decoder not loaded (transposed axes)")
        return
    for key, value in mapped.items():
        if key not in target or value.shape != target[key].shape:
            report.unexpected.append(key)
            continue
        state[key] = value.to(device=target[key].device, dtype=target[key].dtype)
        report.decoder_loaded.append(key)
