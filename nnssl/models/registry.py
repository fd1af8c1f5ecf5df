"""Encoder registry: ``@register_encoder("primus_s", **variant)`` on an encoder class, ``build_encoder`` by name."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

from nnssl.config.enums import look_up_option

# Modules whose import registers the built-in encoders (imported lazily to avoid import cycles).
_BUILTIN_MODULES = ("nnssl.models.encoders.vit", "nnssl.models.encoders.swin")

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class EncoderEntry:
    """A registered name: the encoder class and the variant's default constructor kwargs."""

    cls: type
    defaults: dict[str, Any] = field(default_factory=dict)


_ENCODERS: dict[str, EncoderEntry] = {}


def register_encoder(name: str, **defaults: Any) -> Callable[[T], T]:
    """Class decorator registering ``cls`` under ``name`` with variant defaults (stackable for S/B/L tables).

    Args:
        name: Registry name, e.g. ``"primus_s"``.
        **defaults: Constructor kwargs of this variant; callers of :func:`build_encoder` may override them.
    """

    def decorator(cls: T) -> T:
        if name in _ENCODERS and _ENCODERS[name].cls is not cls:
            raise ValueError(f"encoder name {name!r} is already registered by {_ENCODERS[name].cls.__name__}")
        _ENCODERS[name] = EncoderEntry(cls, dict(defaults))
        return cls

    return decorator


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_encoders() -> list[str]:
    """Registered encoder names, sorted."""
    _load_builtin()
    return sorted(_ENCODERS)


def encoder_entry(name: str) -> EncoderEntry:
    """The registry entry for ``name`` (NnsslError with a suggestion when unknown)."""
    _load_builtin()
    return _ENCODERS[look_up_option(name, sorted(_ENCODERS), "encoder")]


def build_encoder(name: str, in_channels: int, patch_size: tuple[int, int, int], **kwargs: Any) -> nn.Module:
    """Build a registered encoder.

    Args:
        name: Registry name (see :func:`list_encoders`).
        in_channels: Input channels C.
        patch_size: Pretraining crop (D, H, W); must be divisible by the encoder's grid.
        **kwargs: Overrides of the variant's defaults.

    Raises:
        NnsslError: Unknown name, or a patch size the encoder cannot tile.
    """
    entry = encoder_entry(name)
    return entry.cls(in_channels=in_channels, patch_size=tuple(patch_size), registry_name=name,
                     **{**entry.defaults, **kwargs})


def build_encoder_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild an encoder from its ``config()`` (``{"name", "class", "kwargs"}``)."""
    kwargs = dict(config["kwargs"])
    in_channels = kwargs.pop("in_channels")
    patch_size = tuple(kwargs.pop("patch_size"))
    return build_encoder(config["name"], in_channels, patch_size, **kwargs)
