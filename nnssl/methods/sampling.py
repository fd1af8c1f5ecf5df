"""Seedable draws for masking and perturbations: drawn on the generator's device, returned on the data's."""
from __future__ import annotations

import torch


def _draw_device(generator: torch.Generator | None, device: torch.device | str) -> torch.device | str:
    return generator.device if generator is not None else device


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """U[0, 1) samples of ``shape`` on ``device``."""
    return torch.rand(shape, generator=generator, device=_draw_device(generator, device)).to(device)


def normal(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """N(0, 1) samples of ``shape`` on ``device``."""
    return torch.randn(shape, generator=generator, device=_draw_device(generator, device)).to(device)


def randint(high: int, shape: tuple[int, ...], generator: torch.Generator | None,
            device: torch.device | str) -> torch.Tensor:
    """Integers uniform in [0, high) of ``shape`` on ``device`` (int64)."""
    draws = torch.randint(high, shape, generator=generator, device=_draw_device(generator, device))
    return draws.to(device)
