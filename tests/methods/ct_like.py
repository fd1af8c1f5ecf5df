"""A fixed, CT-like, z-normalized synthetic batch for method tests (no data files)."""
from __future__ import annotations

import torch

# Tissue classes of the phantom in normalized intensity units (air, soft tissue, lung, bone).
AIR, TISSUE, LUNG, BONE = -1.5, 0.4, -1.0, 1.8
NOISE_STD = 0.05
# Per-encoder smallest sensible test patch: ViT 8³ tokens -> 4³ grid; MONAI Swin 32³ tokens -> 2³ grid.
TEST_PATCH = {"vit": (32, 32, 32), "swin": (64, 64, 64)}


def ct_like_batch(batch: int, size: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """(B, 1, D, H, W) ellipsoid body with two lungs and a spine, shifted per sample, plus noise."""
    g = torch.Generator().manual_seed(seed)
    zz, yy, xx = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in size], indexing="ij")  # (D, H, W) each
    volumes = []
    for _ in range(batch):
        dy, dx = ((torch.rand(2, generator=g) - 0.5) * 0.3).tolist()
        y, x = yy - dy, xx - dx
        body = (zz / 0.95) ** 2 + (y / 0.7) ** 2 + (x / 0.8) ** 2 < 1
        lungs = ((y + 0.1) / 0.35) ** 2 + ((x.abs() - 0.35) / 0.22) ** 2 + (zz / 0.7) ** 2 < 1
        spine = (y - 0.5) ** 2 + x**2 < 0.02
        v = torch.full(size, AIR)
        v[body] = TISSUE
        v[body & lungs] = LUNG
        v[body & spine] = BONE
        volumes.append(v + NOISE_STD * torch.randn(size, generator=g))
    return torch.stack(volumes)[:, None]  # (B, 1, D, H, W)


def encoder_family(encoder_name: str) -> str:
    """``vit`` or ``swin`` by registry name."""
    return "swin" if encoder_name.startswith("swin") else "vit"
