"""A pretraining checkpoint written through the real checkpoint API, without running a pretraining (seconds)."""
from __future__ import annotations

from pathlib import Path

import torch

from nnssl.config.enums import Normalization
from nnssl.config.plans import IntensityStats, Plans
from nnssl.models.decoders.skip_decoder import SkipDecoder
from nnssl.models.registry import build_encoder
from nnssl.training.checkpoint import CHECKPOINT_FINAL, FORMAT_VERSION, build_header, save_checkpoint

PRETRAIN_DATASET = "Dataset500_PhantomCTUnlabeled"
METHOD = {"name": "mae", "class": "nnssl.methods.mae.MAE", "kwargs": {}}
# Body statistics of a thorax CT (HU); deliberately not those of the downstream phantoms' tumours.
BODY_STATS = IntensityStats(mean=-350.0, std=420.0, median=-200.0, percentile_00_5=-1000.0, percentile_99_5=700.0,
                            min=-1024.0, max=1800.0)


def pretraining_plans(patch_size: tuple[int, int, int], spacing: tuple[float, float, float],
                      num_input_channels: int = 1) -> Plans:
    return Plans(dataset_name=PRETRAIN_DATASET, spacing=spacing, normalization=Normalization.CT,
                 intensity_stats=BODY_STATS, patch_size=patch_size, downstream_patch_size=patch_size,
                 median_shape=patch_size, original_median_spacing=spacing, num_input_channels=num_input_channels)


def write_fake_checkpoint(path: Path, encoder: str = "vit_tiny", patch_size: tuple[int, int, int] = (32, 64, 64),
                          spacing: tuple[float, float, float] = (2.0, 1.0, 1.0), in_channels: int = 1,
                          seed: int = 0, with_skip_decoder: bool = False) -> dict[str, torch.Tensor]:
    """Save a format-1 nnssl checkpoint with a randomly initialized ``encoder`` (and, with ``with_skip_decoder``, the
    ``SkipDecoder`` head of ``simmim head=skip``); returns its encoder state dict."""
    torch.manual_seed(seed)
    module = build_encoder(encoder, in_channels, patch_size)
    plans = pretraining_plans(patch_size, spacing, in_channels)
    header = build_header(METHOD, module.config(), plans.to_dict(), module.transfer.to_dict(), patch_size,
                          module.token_size, in_channels)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    checkpoint = {"format_version": FORMAT_VERSION, "header": header, "encoder_state_dict": state}
    if with_skip_decoder:
        decoder = SkipDecoder(in_channels, module.embed_dim, module.token_size, in_channels)
        checkpoint["decoder_state_dict"] = {k: v.detach().clone() for k, v in decoder.state_dict().items()}
    save_checkpoint(checkpoint, Path(path))
    return state


def write_fake_run(results_root: Path, encoder: str = "vit_tiny", **kwargs) -> Path:
    """``$nnssl_results/Dataset500_.../mae__<encoder>__nnsslPlans/checkpoint_final.pth`` (nnssl_pretrain's layout)."""
    path = Path(results_root) / PRETRAIN_DATASET / f"{METHOD['name']}__{encoder}__nnsslPlans" / CHECKPOINT_FINAL
    write_fake_checkpoint(path, encoder, **kwargs)
    return path
