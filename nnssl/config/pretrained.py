"""The ``pretrained`` block: which nnssl checkpoint a fine-tuning dataset uses, and what it was pretrained with.

Written by ``nnssl_transfer_plans`` in two places, with the same content:

- ``nnsslPlans.json`` of the downstream dataset, under ``configurations[<cfg>]["pretrained"]`` (so the plans that
  nnU-Net copies into the results folder describe the network completely), and
- the link file ``$nnUNet_preprocessed/DatasetXXX_Name/nnssl_pretrained.json``, which SSL trainers read when they are
  started on nnU-Net's default ``nnUNetPlans``.

Only plain JSON types; ``version`` guards the format.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnssl.config.plans import Plans, write_json_atomic
from nnssl.errors import NnsslError

PRETRAINED_VERSION = 1
PRETRAINED_KEY = "pretrained"  # key inside an nnU-Net plans configuration
LINK_FILENAME = "nnssl_pretrained.json"  # in $nnUNet_preprocessed/DatasetXXX_Name/
LINK_COMMAND = "nnssl_transfer_plans -d {dataset} -pd <pretraining dataset id>"
_HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class PretrainedBlock:
    """A pretraining checkpoint and the facts fine-tuning needs from its header.

    Args:
        checkpoint: absolute path of the nnssl checkpoint (``checkpoint_final.pth``).
        sha256: hex digest of that file, checked before the weights are loaded.
        encoder: encoder config ``{"name", "class", "kwargs"}`` from the checkpoint header.
        method: method config ``{"name", "class", "kwargs"}``.
        transfer: ``{"encoder_prefix", "stem_keys", "pos_embed_key"}``.
        plans: the pretraining plans (``Plans.to_dict()``): spacing, normalization and its statistics.
        patch_size: pretraining patch size (Z, Y, X).
        token_size: voxels per token (Z, Y, X).
        num_input_channels: channels the encoder was pretrained on.
    """

    checkpoint: str
    sha256: str
    encoder: dict[str, Any]
    method: dict[str, Any]
    transfer: dict[str, Any]
    plans: dict[str, Any]
    patch_size: tuple[int, int, int]
    token_size: tuple[int, ...]
    num_input_channels: int
    version: int = PRETRAINED_VERSION

    @classmethod
    def from_header(cls, header: dict[str, Any], checkpoint: Path, sha256: str) -> PretrainedBlock:
        """Build from a checkpoint header (see ``nnssl.training.checkpoint``)."""
        return cls(checkpoint=str(Path(checkpoint).resolve()), sha256=sha256, encoder=dict(header["encoder"]),
                   method=dict(header["method"]), transfer=dict(header["transfer"]), plans=dict(header["plans"]),
                   patch_size=tuple(int(v) for v in header["patch_size"]),
                   token_size=tuple(int(v) for v in header["token_size"]),
                   num_input_channels=int(header["num_input_channels"]))

    @property
    def encoder_name(self) -> str:
        return str(self.encoder["name"])

    def pretraining_plans(self) -> Plans:
        """The pretraining plans as the dataclass (spacing, normalization, intensity statistics)."""
        return Plans.from_dict(self.plans, source=f"pretrained block of {self.checkpoint}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["patch_size"] = list(self.patch_size)
        out["token_size"] = list(self.token_size)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> PretrainedBlock:
        """Parse a stored block.

        Raises:
            NnsslError: unknown or missing keys, or a version this nnssl does not read; names ``source``.
        """
        data = dict(data)
        if data.get("version", PRETRAINED_VERSION) != PRETRAINED_VERSION:
            raise NnsslError(f"{source}: pretrained block version {data.get('version')} is not supported "
                             f"(expected {PRETRAINED_VERSION}); re-run nnssl_transfer_plans")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise NnsslError(f"{source}: unknown keys {unknown} in the pretrained block; re-run nnssl_transfer_plans")
        try:
            data["patch_size"] = tuple(int(v) for v in data["patch_size"])
            data["token_size"] = tuple(int(v) for v in data["token_size"])
            data["num_input_channels"] = int(data["num_input_channels"])
            return cls(**data)
        except (KeyError, TypeError, ValueError) as err:
            raise NnsslError(f"{source}: malformed pretrained block ({err}); re-run nnssl_transfer_plans") from None


def link_path(preprocessed_dataset_folder: Path) -> Path:
    """``<nnUNet_preprocessed>/DatasetXXX_Name/nnssl_pretrained.json``."""
    return Path(preprocessed_dataset_folder) / LINK_FILENAME


def write_link(preprocessed_dataset_folder: Path, block: PretrainedBlock) -> Path:
    """Write the link file atomically; returns its path."""
    path = link_path(preprocessed_dataset_folder)
    write_json_atomic(block.to_dict(), path)
    return path


def read_link(preprocessed_dataset_folder: Path) -> PretrainedBlock | None:
    """The linked checkpoint of a downstream dataset, or None when no link exists.

    Raises:
        NnsslError: the link file exists but is not valid.
    """
    path = link_path(preprocessed_dataset_folder)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise NnsslError(f"{path} is not valid JSON ({err}); delete it and re-run nnssl_transfer_plans") from None
    return PretrainedBlock.from_dict(data, source=str(path))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
