"""What every SSL method is: a small module holding an encoder, returning a :class:`MethodOutput`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

PREVIEW_KEYS = ("input", "corrupted", "reconstruction", "target")


@dataclass
class MethodOutput:
    """Result of one ``compute_loss`` call.

    Attributes:
        loss: Scalar to back-propagate.
        parts: Scalar components (e.g. ``inpaint``, ``rotation``, ``contrastive``), for logging.
        previews: ``input``, ``corrupted``, ``reconstruction``, ``target``, each (B, C, D, H, W), detached.
    """

    loss: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    previews: dict[str, torch.Tensor] = field(default_factory=dict)


class SSLMethod(nn.Module):
    """Base of ``mae``, ``simmim``, ``dae``, ``swin_ssl``. Subclasses implement :meth:`compute_loss`.

    ``forward`` calls ``compute_loss`` so that DDP's hooks see the call.

    Attributes:
        encoder: The backbone (composition, STYLE §9).
        requires_token_drop: The method runs the encoder on visible tokens only.
        registry_name: Name it is registered under.
    """

    requires_token_drop: ClassVar[bool] = False
    registry_name: ClassVar[str | None] = None

    def __init__(self, encoder: nn.Module, config_kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.encoder = encoder
        self._config_kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in config_kwargs.items()}

    def compute_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> MethodOutput:
        """One self-supervised loss on a batch (B, C, D, H, W) at the encoder's patch size."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> MethodOutput:
        """Same as :meth:`compute_loss`."""
        return self.compute_loss(x, generator)

    def transferable_decoder(self) -> nn.Module | None:
        """A decoder that fine-tuning loads along with the encoder (a ``skip`` head), else None."""
        head = getattr(self, "head", None)
        return getattr(head, "transferable", None)

    def config(self) -> dict[str, Any]:
        """``{"name", "class", "kwargs"}`` (plain types, encoder excluded); ``build_method`` rebuilds it."""
        cls = type(self)
        return {"name": self.registry_name, "class": f"{cls.__module__}.{cls.__qualname__}",
                "kwargs": dict(self._config_kwargs)}


def detached_previews(input: torch.Tensor, corrupted: torch.Tensor, reconstruction: torch.Tensor,
                      target: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four preview volumes (B, C, D, H, W), detached and in float32."""
    volumes = (input, corrupted, reconstruction, target)
    return {key: v.detach().float() for key, v in zip(PREVIEW_KEYS, volumes, strict=True)}
