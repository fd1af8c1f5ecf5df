"""String options as StrEnums, checked at the boundary with a "did you mean" error."""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from enum import StrEnum

from nnssl.errors import NnsslError

__all__ = ["Normalization", "StrEnum", "look_up_option"]


class Normalization(StrEnum):
    """Intensity normalization. ``ct``: clip to the 0.5/99.5 percentiles of the body, then z-score with the
    dataset's statistics (nnU-Net's ``CTNormalization``). ``zscore``: per-image z-score (non-CT fallback)."""

    CT = "ct"
    ZSCORE = "zscore"


def look_up_option(value: str, choices: Iterable[str], what: str) -> str:
    """Return ``value`` if it is one of ``choices``; else raise an error listing them, with a suggestion."""
    options = [str(c) for c in choices]
    if value in options:
        return value
    close = difflib.get_close_matches(str(value), options, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise NnsslError(f"unknown {what} {value!r}{hint} (choose from: {', '.join(options)})")
