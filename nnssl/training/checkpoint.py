"""Pretraining checkpoints: one plain dict of tensors and Python types, written atomically, read with weights_only.

Layout (``format_version`` 1)::

    {"format_version": 1,
     "header": {"nnssl_version": str, "method": {"name", "class", "kwargs"}, "encoder": {"name", "class", "kwargs"},
                "plans": Plans.to_dict(), "transfer": {"encoder_prefix", "stem_keys", "pos_embed_key"},
                "patch_size": [z, y, x], "token_size": [...], "num_input_channels": int},
     "encoder_state_dict": {...},   # the encoder module's own state_dict: the key fine-tuning reads
     "decoder_state_dict": {...} | None,   # a SkipDecoder head (fine-tuning loads it too), else None / absent
     "model_state_dict": {...}, "optimizer_state_dict": {...}, "scheduler_state_dict": {...},
     "scaler_state_dict": {...} | None, "epoch": int, "rng_state": {...}, "history": {...}}

Everything in it loads with ``torch.load(path, weights_only=True)``: no pickled classes, no numpy arrays (the numpy RNG
state is stored as a tensor plus ints, see :func:`capture_rng_state`).
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnssl import __version__
from nnssl.errors import NnsslError

FORMAT_VERSION = 1
CHECKPOINT_LATEST = "checkpoint_latest.pth"
CHECKPOINT_FINAL = "checkpoint_final.pth"

HEADER_KEYS = ("nnssl_version", "method", "encoder", "plans", "transfer", "patch_size", "token_size",
               "num_input_channels")
REQUIRED_KEYS = ("format_version", "header", "encoder_state_dict")
RESUME_KEYS = ("model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "scaler_state_dict", "epoch",
               "rng_state", "history")


def build_header(method: dict[str, Any], encoder: dict[str, Any], plans: dict[str, Any], transfer: dict[str, Any],
                 patch_size: tuple[int, int, int], token_size: tuple[int, ...] | list[int],
                 num_input_channels: int) -> dict[str, Any]:
    """Assemble the self-describing header from plain values (configs are ``{"name", "class", "kwargs"}`` dicts)."""
    return {
        "nnssl_version": __version__,
        "method": dict(method),
        "encoder": dict(encoder),
        "plans": dict(plans),
        "transfer": dict(transfer),
        "patch_size": [int(v) for v in patch_size],
        "token_size": [int(v) for v in token_size],
        "num_input_channels": int(num_input_channels),
    }


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Write ``checkpoint`` to ``path`` atomically: a temp file in the same folder, fsync, then ``os.replace``.

    A crash at any point leaves either the old file or the new one, never half a file.

    Raises:
        NnsslError: the dict lacks the required keys (a programming error surfaced early, not a corrupt file later).
    """
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    missing += [f"header.{key}" for key in HEADER_KEYS if key not in checkpoint.get("header", {})]
    if missing:
        raise NnsslError(f"refusing to write {path}: checkpoint is missing {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and check that it is an nnssl checkpoint we understand.

    Args:
        path: a ``checkpoint_*.pth`` written by :func:`save_checkpoint`.
        map_location: device for the tensors (a GPU-saved file loads on CPU with the default).

    Returns:
        The checkpoint dict (see the module docstring).

    Raises:
        NnsslError: the file is missing, corrupt/truncated, not an nnssl checkpoint, or of an unsupported version.
    """
    path = Path(path)
    if not path.is_file():
        raise NnsslError(f"no checkpoint at {path}; run nnssl_pretrain first or pass the path of an existing "
                         "checkpoint_final.pth / checkpoint_latest.pth")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types (KeyError, EOFError...) for bad bytes
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise NnsslError(f"{path} is corrupt or truncated ({reason}); delete it and re-run nnssl_pretrain "
                         "(with --c to continue from checkpoint_latest.pth if that one is intact)") from None
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in REQUIRED_KEYS):
        raise NnsslError(f"{path} is not an nnssl pretraining checkpoint (expected keys {list(REQUIRED_KEYS)}); "
                         "pass a checkpoint written by nnssl_pretrain")
    version = checkpoint["format_version"]
    if version != FORMAT_VERSION:
        raise NnsslError(f"{path} has checkpoint format_version {version}, this nnssl ({__version__}) reads "
                         f"version {FORMAT_VERSION}; use the matching nnssl version or re-run the pretraining")
    header = checkpoint["header"]
    missing = [key for key in HEADER_KEYS if not isinstance(header, dict) or key not in header]
    if missing:
        raise NnsslError(f"{path}: checkpoint header lacks {missing}; it was not written by nnssl_pretrain")
    return checkpoint


def load_pretrained_encoder(path: Path, map_location: str | torch.device = "cpu"
                            ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Return ``(header, encoder_state_dict)`` of a pretraining checkpoint, for fine-tuning.

    Raises:
        NnsslError: as :func:`load_checkpoint`.
    """
    checkpoint = load_checkpoint(path, map_location=map_location)
    return checkpoint["header"], checkpoint["encoder_state_dict"]


def pretrained_decoder_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The transferable decoder's state dict of a loaded checkpoint ({} when the method had none)."""
    state = checkpoint.get("decoder_state_dict")
    return dict(state) if isinstance(state, dict) else {}


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA, when initialised) RNG states as tensors and plain types."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_plain(random.getstate()),
        "numpy": {"kind": str(np_kind), "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states are restored only where the devices exist)."""
    random.setstate(_to_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].cpu().numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def _to_plain(value: Any) -> Any:
    """Tuples -> lists, recursively (weights_only loads lists of ints happily; it also loads tuples, but lists keep
    the stored form obvious)."""
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    return value


def _to_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value
