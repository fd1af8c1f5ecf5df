"""Dataset fingerprint of unlabeled CT: geometry per case and intensity statistics inside the body.

Like nnU-Net's ``DatasetFingerprintExtractor``, but without labels: the body mask stands in for the foreground, and a
fixed number of body voxels per case is sampled (seeded, with replacement) for the dataset's intensity statistics.
Written to ``nnssl_preprocessed/DatasetXXX_Name/dataset_fingerprint.json``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnssl.config.plans import IntensityStats, write_json_atomic
from nnssl.data.raw_dataset import RawCase, file_ending_of, list_raw_cases, load_dataset_json, read_case, reader_for
from nnssl.errors import NnsslError
from nnssl.planning.body_mask import BODY_THRESHOLD_HU, body_bbox, ct_body_mask, nonzero_mask
from nnssl.planning.process_pool import map_cases

FINGERPRINT_FILE = "dataset_fingerprint.json"
FINGERPRINT_VERSION = 1
# nnU-Net samples foreground intensities with a fixed seed; 10,000 body voxels per case, drawn with replacement.
SAMPLES_PER_CASE = 10_000
SAMPLING_SEED = 1234
PERCENTILES = (0.5, 50.0, 99.5)


@dataclass(frozen=True)
class CaseFingerprint:
    """What planning needs to know about one case.

    Attributes:
        identifier: case id.
        spacing: mm, (Z, Y, X).
        shape: voxels before cropping, (Z, Y, X).
        shape_after_crop: voxels of the body bounding box, (Z, Y, X).
        direction: image orientation (direction cosines, row-major 3x3 in the reader's axis order).
        min: lowest value of channel 0.
        max: highest value of channel 0.
        body_fraction: share of voxels inside the body mask.
    """

    identifier: str
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    shape_after_crop: tuple[int, int, int]
    direction: tuple[float, ...]
    min: float
    max: float
    body_fraction: float

    @property
    def has_air(self) -> bool:
        """CT of a patient shows air (about -1000 HU) around or inside the body."""
        return self.min < BODY_THRESHOLD_HU

    @property
    def has_negative_values(self) -> bool:
        """HU data has negative values (fat, air); MR, PET and unshifted CT have none."""
        return self.min < 0


@dataclass(frozen=True)
class DatasetFingerprint:
    """Per-case geometry plus the dataset's body intensity statistics (channel 0).

    Attributes:
        dataset_name: ``DatasetXXX_Name``.
        channel_names: from dataset.json, e.g. ``{"0": "CT"}``.
        file_ending: from dataset.json.
        image_reader_writer: the nnunetv2 reader class used.
        cases: one entry per case, sorted by identifier.
        intensity_stats: over the pooled body samples of all cases.
        samples_per_case: body voxels sampled per case.
    """

    dataset_name: str
    channel_names: dict[str, str]
    file_ending: str
    image_reader_writer: str
    cases: tuple[CaseFingerprint, ...]
    intensity_stats: IntensityStats
    samples_per_case: int = SAMPLES_PER_CASE
    version: int = FINGERPRINT_VERSION

    @property
    def spacings(self) -> np.ndarray:
        """(N, 3) spacings, (Z, Y, X)."""
        return np.array([c.spacing for c in self.cases], dtype=np.float64)

    @property
    def shapes_after_crop(self) -> np.ndarray:
        """(N, 3) body-box shapes, (Z, Y, X)."""
        return np.array([c.shape_after_crop for c in self.cases], dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> DatasetFingerprint:
        try:
            if data.get("version") != FINGERPRINT_VERSION:
                raise ValueError(f"version {data.get('version')} (expected {FINGERPRINT_VERSION})")
            cases = tuple(CaseFingerprint(**{**c, "spacing": tuple(c["spacing"]), "shape": tuple(c["shape"]),
                                             "shape_after_crop": tuple(c["shape_after_crop"]),
                                             "direction": tuple(c["direction"])}) for c in data["cases"])
            return cls(**{**data, "cases": cases, "intensity_stats": IntensityStats(**data["intensity_stats"])})
        except (KeyError, TypeError, ValueError) as err:
            raise NnsslError(f"{source}: malformed fingerprint ({err}); rerun nnssl_extract_fingerprint with "
                             "--clean") from None

    def save(self, path: Path) -> None:
        write_json_atomic(self.to_dict(), Path(path))

    @classmethod
    def load(cls, path: Path) -> DatasetFingerprint:
        path = Path(path)
        if not path.is_file():
            raise NnsslError(f"no fingerprint at {path}; run `nnssl_extract_fingerprint -d <id>` first")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise NnsslError(f"{path} is not valid JSON ({err}); rerun nnssl_extract_fingerprint "
                             "with --clean") from None
        return cls.from_dict(data, str(path))


def case_body_mask(data: np.ndarray, source: str, hounsfield: bool) -> np.ndarray:
    """The body mask used for a case: the CT body mask for HU data, else nnU-Net's nonzero mask.

    Args:
        data: image, (C, Z, Y, X).
        source: name for error messages.
        hounsfield: whether channel 0 is in HU.

    Returns:
        Bool mask, (Z, Y, X).
    """
    return ct_body_mask(data[0], source) if hounsfield else nonzero_mask(data)


def fingerprint_case(case: RawCase, samples_per_case: int = SAMPLES_PER_CASE,
                     seed: int = SAMPLING_SEED) -> tuple[CaseFingerprint, np.ndarray]:
    """Read one case, find its body, and sample body intensities.

    Args:
        case: the raw case.
        samples_per_case: body voxels to draw (with replacement, as nnU-Net).
        seed: sampling seed (the same for every case, as nnU-Net).

    Returns:
        The case's fingerprint and its samples, (samples_per_case,) float32.
    """
    data, properties = read_case(case)  # (C, Z, Y, X)
    channel = data[0]  # (Z, Y, X)
    low, high = float(channel.min()), float(channel.max())
    mask = case_body_mask(data, str(case.files[0]), hounsfield=low < 0)  # (Z, Y, X)
    bbox = body_bbox(mask)
    body = channel[mask]  # (K,)
    samples = np.random.RandomState(seed).choice(body, samples_per_case, replace=True).astype(np.float32)
    geometry = properties.get("sitk_stuff", {})
    direction = tuple(float(v) for v in geometry.get("direction", np.eye(3).ravel()))
    z, y, x = (float(v) for v in properties["spacing"])
    sz, sy, sx = (int(v) for v in channel.shape)
    cz, cy, cx = (int(hi - lo) for lo, hi in bbox)
    fingerprint = CaseFingerprint(case.identifier, (z, y, x), (sz, sy, sx), (cz, cy, cx), direction, low, high,
                                  float(body.size / channel.size))
    return fingerprint, samples


def intensity_statistics(samples: np.ndarray) -> IntensityStats:
    """nnU-Net's foreground statistics of pooled samples: mean, std, median, 0.5/99.5 percentiles, min, max."""
    low, median, high = np.percentile(samples, PERCENTILES)
    return IntensityStats(mean=float(np.mean(samples)), std=float(np.std(samples)), median=float(median),
                          percentile_00_5=float(low), percentile_99_5=float(high), min=float(np.min(samples)),
                          max=float(np.max(samples)))


def extract_fingerprint(raw_dataset: Path, num_processes: int = 2,
                        samples_per_case: int = SAMPLES_PER_CASE) -> DatasetFingerprint:
    """Fingerprint every case of a raw dataset.

    Args:
        raw_dataset: ``nnssl_raw/DatasetXXX_Name``.
        num_processes: worker processes.
        samples_per_case: body voxels sampled per case.

    Returns:
        The dataset fingerprint (not yet saved).

    Raises:
        NnsslError: the dataset's structure or any case is bad (all bad cases listed).
    """
    raw_dataset = Path(raw_dataset)
    meta = load_dataset_json(raw_dataset)
    cases = list_raw_cases(raw_dataset)
    worker = functools.partial(fingerprint_case, samples_per_case=samples_per_case)
    results = map_cases(worker, cases, num_processes, desc=f"fingerprint {raw_dataset.name}")
    per_case = tuple(r[0] for r in results)
    samples = np.concatenate([r[1] for r in results])  # (N * samples_per_case,)
    return DatasetFingerprint(
        dataset_name=raw_dataset.name,
        channel_names={str(k): str(v) for k, v in meta["channel_names"].items()},
        file_ending=str(meta["file_ending"]),
        image_reader_writer=reader_for(file_ending_of(cases[0].files[0])).__name__,
        cases=per_case,
        intensity_stats=intensity_statistics(samples),
        samples_per_case=samples_per_case,
    )


def load_or_extract_fingerprint(raw_dataset: Path, output_file: Path, num_processes: int = 2,
                                clean: bool = False) -> DatasetFingerprint:
    """Reuse ``output_file`` if it describes exactly the current cases, else extract and save a new fingerprint.

    Args:
        raw_dataset: ``nnssl_raw/DatasetXXX_Name``.
        output_file: ``nnssl_preprocessed/DatasetXXX_Name/dataset_fingerprint.json``.
        num_processes: worker processes.
        clean: always extract anew.

    Returns:
        The fingerprint.
    """
    output_file = Path(output_file)
    if not clean and output_file.is_file():
        existing = DatasetFingerprint.load(output_file)
        current = [c.identifier for c in list_raw_cases(raw_dataset)]
        if [c.identifier for c in existing.cases] == current:
            print(f"reusing {output_file} ({len(current)} cases; --clean extracts it anew)")
            return existing
        print(f"{output_file} lists other cases than {raw_dataset / 'imagesTr'}; extracting it anew")
    fingerprint = extract_fingerprint(raw_dataset, num_processes)
    fingerprint.save(output_file)
    return fingerprint
