"""``nnsslPlans.json``: the pretraining plans, as frozen dataclasses that round-trip through editable JSON.

Axis order follows nnU-Net: arrays are (C, Z, Y, X) and every spacing / shape / patch size here is (Z, Y, X).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnssl.config.enums import Normalization
from nnssl.errors import NnsslError

PLANS_VERSION = 1
DEFAULT_PLANS_NAME = "nnsslPlans"


@dataclass(frozen=True)
class IntensityStats:
    """CT intensity statistics sampled inside the body mask (HU)."""

    mean: float
    std: float
    median: float
    percentile_00_5: float
    percentile_99_5: float
    min: float
    max: float


@dataclass(frozen=True)
class Plans:
    """Everything preprocessing, pretraining and transfer need to agree on.

    Args:
        dataset_name: ``DatasetXXX_Name``.
        spacing: target spacing in mm, (Z, Y, X).
        normalization: intensity scheme; ``intensity_stats`` is required for ``ct``.
        patch_size: pretraining crop, voxels (Z, Y, X); divisible by every encoder's grid.
        downstream_patch_size: recommended nnU-Net fine-tuning patch size (Z, Y, X).
        median_shape: median shape after resampling to ``spacing`` (Z, Y, X).
        original_median_spacing: median raw spacing (Z, Y, X).
        image_reader_writer: nnU-Net reader/writer class name used to read the raw images.
        num_input_channels: image channels per case.
        decisions: human-readable reasons for each planned value.
    """

    dataset_name: str
    spacing: tuple[float, float, float]
    normalization: Normalization
    intensity_stats: IntensityStats | None
    patch_size: tuple[int, int, int]
    downstream_patch_size: tuple[int, int, int]
    median_shape: tuple[int, int, int]
    original_median_spacing: tuple[float, float, float]
    image_reader_writer: str = "SimpleITKIO"
    num_input_channels: int = 1
    plans_name: str = DEFAULT_PLANS_NAME
    decisions: tuple[str, ...] = field(default_factory=tuple)
    version: int = PLANS_VERSION

    def __post_init__(self) -> None:
        if self.normalization == Normalization.CT and self.intensity_stats is None:
            raise NnsslError(f"plans {self.plans_name}: normalization 'ct' needs intensity_stats")
        for name in ("spacing", "patch_size", "downstream_patch_size", "median_shape", "original_median_spacing"):
            if len(getattr(self, name)) != 3:
                raise NnsslError(f"plans {self.plans_name}: {name} must have 3 values (Z, Y, X)")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["normalization"] = str(self.normalization)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "plans") -> Plans:
        data = dict(data)
        version = data.get("version", PLANS_VERSION)
        if version != PLANS_VERSION:
            raise NnsslError(f"{source}: plans version {version} is not supported (expected {PLANS_VERSION}); "
                             "re-run nnssl_plan_experiment")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise NnsslError(f"{source}: unknown plans keys {unknown}; known keys: {sorted(known)}")
        try:
            stats = data.get("intensity_stats")
            data["intensity_stats"] = IntensityStats(**stats) if stats is not None else None
            data["normalization"] = Normalization(data["normalization"])
            for key in ("spacing", "original_median_spacing"):
                data[key] = tuple(float(v) for v in data[key])
            for key in ("patch_size", "downstream_patch_size", "median_shape"):
                data[key] = tuple(int(v) for v in data[key])
            data["decisions"] = tuple(data.get("decisions", ()))
            return cls(**data)
        except (KeyError, TypeError, ValueError) as err:
            raise NnsslError(f"{source}: malformed plans ({err}); re-run nnssl_plan_experiment") from None

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a plans file."""
        write_json_atomic(self.to_dict(), Path(path))

    @classmethod
    def load(cls, path: Path) -> Plans:
        path = Path(path)
        if not path.is_file():
            raise NnsslError(f"no plans at {path}; run `nnssl_plan_experiment -d <id>` first")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise NnsslError(f"{path} is not valid JSON ({err}); fix or delete it and re-plan") from None
        return cls.from_dict(data, source=str(path))


def write_json_atomic(obj: Any, path: Path) -> None:
    """Write JSON to ``path`` via a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; plans must stay readable by other users (containers)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
