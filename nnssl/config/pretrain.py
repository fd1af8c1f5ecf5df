"""``pretrain_config.json``: one pretraining run's settings as a frozen, versioned dataclass with an editable JSON form.

The run folder keeps this file beside its checkpoints, so ``nnssl_pretrain --c`` continues with exactly the settings of
the interrupted run. Global batch size = ``batch_size`` x world size (torchrun processes) x ``accumulate``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnssl.config.enums import StrEnum, look_up_option
from nnssl.config.plans import DEFAULT_PLANS_NAME, write_json_atomic
from nnssl.errors import NnsslError

PRETRAIN_CONFIG_VERSION = 1
PRETRAIN_CONFIG_FILE = "pretrain_config.json"

# Max global L2 norm of the gradients before the optimizer step. MAE / ViT pretraining recipes clip at 1.0 or not at
# all; nnU-Net's 12 is tuned for CNN segmentation losses, which are on another scale.
DEFAULT_GRAD_CLIP_NORM = 1.0
# AdamW betas of MAE (He et al. 2021, Table 8): beta2 = 0.95 is more stable than 0.999 for masked image modelling.
DEFAULT_BETAS = (0.9, 0.95)
DEFAULT_WEIGHT_DECAY = 0.05
# Share of crops centred on a body voxel (``body_locations``); the rest are uniform over the volume, so the model still
# sees the body's edge and the air around it.
DEFAULT_P_BODY_CROP = 0.9
# Default warm-up: 5 epochs as in nnssl/MAE-style recipes, but at most a tenth of a short run.
DEFAULT_WARMUP_EPOCHS = 5
WARMUP_MAX_FRACTION = 0.1
# Exponent of the poly schedule, as nnU-Net's PolyLRScheduler.
DEFAULT_POLY_EXPONENT = 0.9

# Fields a continued run (``--c``) may change: they do not change what is learned, only how or how long it runs.
RESUMABLE_OVERRIDES = frozenset({"epochs", "save_every", "preview_every", "num_workers", "device"})


class Schedule(StrEnum):
    """Learning-rate decay after the linear warm-up."""

    COSINE = "cosine"
    POLY = "poly"


class DeviceKind(StrEnum):
    """Where the run executes; ``auto`` picks CUDA when available, else CPU."""

    AUTO = "auto"
    CUDA = "cuda"
    CPU = "cpu"
    MPS = "mps"


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of one pretraining run.

    Args:
        dataset_name: ``DatasetXXX_Name`` in ``nnssl_preprocessed``.
        method: registered method name (``mae``, ``simmim``, ...).
        encoder: registered encoder name (``primus_s``, ``vit_tiny``, ``swin_b``, ...).
        plans_name: plans identifier; data is read from ``<plans_name>_3d``.
        epochs: number of epochs.
        iters_per_epoch: optimizer steps per epoch.
        batch_size: samples per process per micro-batch.
        accumulate: micro-batches per optimizer step (gradient accumulation).
        lr: peak learning rate (reached at the end of the warm-up).
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_epochs: linear warm-up length, shorter than ``epochs``; None = min(5, epochs // 10), resolved when the
            config is created so the saved JSON holds the number.
        schedule: decay after the warm-up.
        poly_exponent: exponent of the poly schedule.
        grad_clip_norm: max gradient L2 norm; ``0`` disables clipping.
        device: ``auto``, ``cuda``, ``cpu`` or ``mps``.
        seed: base seed; per-sample and per-step seeds derive from it, the rank and the step.
        num_workers: background data-loading processes per rank (0 = in the training process).
        patch_size: crop (Z, Y, X); None = the planned pretraining patch size.
        p_body_crop: share of crops centred on a body voxel.
        augment: apply the light batchgeneratorsv2 augmentation.
        save_every: write ``checkpoint_latest.pth`` every N epochs.
        preview_every: write ``progress.png`` and ``recon_epoch_XXX.png`` every N epochs.
        method_kwargs: extra keyword arguments for the method builder (e.g. ``mask_ratio``).
        encoder_kwargs: extra keyword arguments for the encoder builder.
    """

    dataset_name: str
    method: str = "mae"
    encoder: str = "primus_s"
    plans_name: str = DEFAULT_PLANS_NAME
    epochs: int = 100
    iters_per_epoch: int = 250
    batch_size: int = 2
    accumulate: int = 1
    lr: float = 1e-4
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    betas: tuple[float, float] = DEFAULT_BETAS
    warmup_epochs: int | None = None
    schedule: Schedule = Schedule.COSINE
    poly_exponent: float = DEFAULT_POLY_EXPONENT
    grad_clip_norm: float = DEFAULT_GRAD_CLIP_NORM
    device: DeviceKind = DeviceKind.AUTO
    seed: int = 12345
    num_workers: int = 2
    patch_size: tuple[int, int, int] | None = None
    p_body_crop: float = DEFAULT_P_BODY_CROP
    augment: bool = True
    save_every: int = 1
    preview_every: int = 5
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    version: int = PRETRAIN_CONFIG_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", Schedule(look_up_option(str(self.schedule), list(Schedule), "schedule")))
        object.__setattr__(self, "device", DeviceKind(look_up_option(str(self.device), list(DeviceKind), "device")))
        if self.warmup_epochs is None:
            auto = min(DEFAULT_WARMUP_EPOCHS, int(self.epochs * WARMUP_MAX_FRACTION))
            object.__setattr__(self, "warmup_epochs", auto)
        positive = ("epochs", "iters_per_epoch", "batch_size", "accumulate", "save_every", "preview_every")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise NnsslError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise NnsslError(f"warmup_epochs must be in [0, epochs) = [0, {self.epochs}), got {self.warmup_epochs}; "
                             "lower --warmup-epochs or raise --epochs")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip_norm < 0:
            raise NnsslError(f"need lr > 0, weight_decay >= 0, grad_clip_norm >= 0 (got {self.lr}, "
                             f"{self.weight_decay}, {self.grad_clip_norm})")
        if self.seed < 0:
            raise NnsslError(f"seed must be >= 0, got {self.seed}")
        if self.num_workers < 0:
            raise NnsslError(f"num_workers (-np) must be >= 0, got {self.num_workers}")
        if not 0.0 <= self.p_body_crop <= 1.0:
            raise NnsslError(f"p_body_crop must be in [0, 1], got {self.p_body_crop}")
        if self.patch_size is not None and (len(self.patch_size) != 3 or min(self.patch_size) < 1):
            raise NnsslError(f"patch_size must be 3 positive ints (Z Y X), got {self.patch_size}")

    @property
    def run_name(self) -> str:
        """Results sub-folder: ``<method>__<encoder>__<plans_name>``."""
        return run_folder_name(self.method, self.encoder, self.plans_name)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["schedule"] = str(self.schedule)
        out["device"] = str(self.device)
        out["betas"] = list(self.betas)
        out["patch_size"] = list(self.patch_size) if self.patch_size is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "pretrain config") -> PretrainConfig:
        """Build from JSON-like data; unknown keys and other versions are errors that name ``source``."""
        data = dict(data)
        version = data.get("version", PRETRAIN_CONFIG_VERSION)
        if version != PRETRAIN_CONFIG_VERSION:
            raise NnsslError(f"{source}: pretrain config version {version} is not supported (expected "
                             f"{PRETRAIN_CONFIG_VERSION}); start a new run or migrate the file")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise NnsslError(f"{source}: unknown keys {unknown}; known keys: {sorted(known)}")
        try:
            if data.get("patch_size") is not None:
                data["patch_size"] = tuple(int(v) for v in data["patch_size"])
            if "betas" in data:
                data["betas"] = tuple(float(v) for v in data["betas"])
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise NnsslError(f"{source}: malformed pretrain config ({err}); fix or delete it") from None

    def replace(self, **changes: Any) -> PretrainConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def save(self, path: Path) -> None:
        """Write atomically."""
        write_json_atomic(self.to_dict(), Path(path))

    @classmethod
    def load(cls, path: Path) -> PretrainConfig:
        path = Path(path)
        if not path.is_file():
            raise NnsslError(f"no pretrain config at {path}; start the run without --c first")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise NnsslError(f"{path} is not valid JSON ({err}); fix or delete it") from None
        return cls.from_dict(data, source=str(path))


def run_folder_name(method: str, encoder: str, plans_name: str) -> str:
    """``<method>__<encoder>__<plans_name>``: a run's folder inside ``nnssl_results/DatasetXXX_Name``."""
    return f"{method}__{encoder}__{plans_name}"


def parse_key_values(items: list[str], source: str = "--method-kwargs") -> dict[str, Any]:
    """``["mask_ratio=0.6", "norm_target=true"]`` -> ``{"mask_ratio": 0.6, "norm_target": True}`` (JSON values; a
    value that is not JSON stays a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise NnsslError(f"{source}: expected key=value, got {item!r} (e.g. mask_ratio=0.6)")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
