"""Method registry: ``@register_method("mae")``, ``build_method`` and ``check_compatible``."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from nnssl.config.enums import look_up_option
from nnssl.errors import NnsslError
from nnssl.models.registry import encoder_entry, list_encoders

_BUILTIN_MODULES = ("nnssl.methods.mae", "nnssl.methods.simmim", "nnssl.methods.dae", "nnssl.methods.swin_ssl")

T = TypeVar("T", bound=type)
_METHODS: dict[str, type] = {}


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator registering an ``SSLMethod`` subclass under ``name``."""

    def decorator(cls: T) -> T:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method name {name!r} is already registered by {_METHODS[name].__name__}")
        _METHODS[name] = cls
        cls.registry_name = name
        return cls

    return decorator


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    _load_builtin()
    return sorted(_METHODS)


def method_class(name: str) -> type:
    """The class registered as ``name`` (NnsslError with a suggestion when unknown)."""
    _load_builtin()
    return _METHODS[look_up_option(name, sorted(_METHODS), "method")]


def check_compatible(method: str, encoder: str) -> None:
    """Refuse encoder x method pairs that make no sense, with the reason.

    Rule: a method that runs the encoder on visible tokens only (``mae``) needs an encoder that can drop tokens
    (the ViTs); Swin's windowed attention needs the dense grid, so it is refused there. Every other pair works.

    Raises:
        NnsslError: Unknown name or refused pair.
    """
    cls = method_class(method)
    entry = encoder_entry(encoder)
    if cls.requires_token_drop and not entry.cls.supports_token_drop:
        usable = [name for name in list_encoders() if encoder_entry(name).cls.supports_token_drop]
        raise NnsslError(
            f"method {method!r} runs the encoder on visible tokens only, which encoder {encoder!r} cannot do "
            f"(windowed attention needs the full token grid); use one of: {', '.join(usable)}, "
            f"or method simmim/dae/swin_ssl with {encoder!r}"
        )


def build_method(name: str, encoder: nn.Module, **kwargs: Any) -> nn.Module:
    """Build method ``name`` around ``encoder`` (checks the pair when the encoder has a registry name)."""
    cls = method_class(name)
    if getattr(encoder, "registry_name", None):
        check_compatible(name, encoder.registry_name)
    return cls(encoder, **kwargs)


def build_method_from_config(config: dict[str, Any], encoder: nn.Module) -> nn.Module:
    """Rebuild a method from its ``config()`` around ``encoder``."""
    return build_method(config["name"], encoder, **config["kwargs"])
