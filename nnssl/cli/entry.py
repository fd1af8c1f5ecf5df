"""Turns :class:`~nnssl.errors.NnsslError` into a one-line message and exit code 2 for every console script."""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from nnssl.errors import NnsslError


def cli_entry(func: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a ``main`` so user errors print ``nnssl: error: ...`` (no traceback) and exit with code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs) -> int:
        try:
            code = func(*args, **kwargs)
        except NnsslError as err:
            print(f"nnssl: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("nnssl: interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
            raise SystemExit(130) from None
        return int(code or 0)

    return wrapper
