"""Procedural thorax CT phantoms in HU with lung tumours: the embedded default data of the demo and the tests.

``make_phantom(seed)`` renders one case (anatomy in ``phantom_anatomy``, vessel and airway trees in ``phantom_trees``,
tumours in ``phantom_tumours``), then simulates acquisition: smooth tissue texture, correlated noise and a blurring
point-spread function. ``write_phantom_dataset`` writes many cases in nnU-Net's raw layout, in parallel; the same seed
gives byte-identical arrays whatever the number of processes.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from tqdm import tqdm

from nnssl.config.plans import write_json_atomic
from nnssl.data.phantom_anatomy import LUNG_GRAVITY_HU, TISSUE_HU, BodyFrame, Tissue, render_thorax
from nnssl.data.phantom_trees import add_pulmonary_trees
from nnssl.data.phantom_tumours import DIAMETER_RANGE_MM, Tumour, add_tumours
from nnssl.errors import NnsslError
from nnssl.paths import parse_dataset_name

DEFAULT_SHAPE = (96, 128, 128)  # (Z, Y, X)
MIN_SIDE = 16  # voxels per axis; smaller volumes cannot hold the anatomy
HU_RANGE = (-1024, 3071)  # what a 12-bit CT scanner stores
NOISE_STD_HU = (8.0, 22.0)  # image noise after the point-spread function
PSF_SIGMA_INPLANE = (0.5, 0.9)  # voxels
PSF_SIGMA_SLICE = (0.3, 0.6)  # voxels
TEXTURE_CELL = (6, 8, 8)  # voxels per control point of the smooth tissue texture (Z, Y, X)
TEXTURE_HU = {Tissue.LUNG: 15.0, Tissue.AIR: 0.0, Tissue.TABLE: 0.0}  # everything else: DEFAULT_TEXTURE_HU
DEFAULT_TEXTURE_HU = 6.0
COMPRESSION_LEVEL = 1  # gzip level of the .nii.gz files: noise barely compresses, so speed wins
CHANNEL_NAMES = {"0": "CT"}
LABELS = {"background": 0, "tumour": 1}
FILE_ENDING = ".nii.gz"
CASES_FILE = "phantom_cases.json"
SPLIT_STREAMS = {"unlabeled": 0, "train": 1, "test": 2}  # independent random streams per split


@dataclass(frozen=True)
class SpacingRange:
    """Voxel spacing drawn per case: a slice spacing and one in-plane spacing (for Y and X), uniform in mm."""

    slice_mm: tuple[float, float] = (1.5, 3.0)
    inplane_mm: tuple[float, float] = (0.7, 1.0)

    def __post_init__(self) -> None:
        for name in ("slice_mm", "inplane_mm"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise NnsslError(f"spacing {name} must satisfy 0 < low <= high, got {low}..{high} mm")

    def draw(self, rng: np.random.Generator) -> tuple[float, float, float]:
        """One spacing (Z, Y, X) in mm, rounded to µm as scanners store it."""
        slice_mm, inplane = rng.uniform(*self.slice_mm), rng.uniform(*self.inplane_mm)
        return round(slice_mm, 3), round(inplane, 3), round(inplane, 3)


@dataclass(frozen=True)
class Phantom:
    """One phantom CT.

    Attributes:
        image: int16 (Z, Y, X) in HU.
        label: uint8 (Z, Y, X); 1 = tumour.
        spacing: mm (Z, Y, X).
        tissue: uint8 (Z, Y, X) of ``Tissue`` (ground truth of every voxel before noise and blur).
        lung_mask: bool (Z, Y, X), the lungs the tumours were placed in.
        tumours: the tumours, with nominal diameter and label volume.
    """

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    tissue: np.ndarray
    lung_mask: np.ndarray
    tumours: tuple[Tumour, ...]


def make_phantom(seed: int, shape: tuple[int, int, int] = DEFAULT_SHAPE,
                 spacing: tuple[float, float, float] | SpacingRange = SpacingRange(),
                 tumour_mm: tuple[float, float] = DIAMETER_RANGE_MM) -> Phantom:
    """Render one thorax CT phantom.

    Args:
        seed: fixes everything; the same seed gives byte-identical arrays.
        shape: voxels (Z, Y, X).
        spacing: a fixed spacing (Z, Y, X) in mm, or the range to draw it from.
        tumour_mm: range of the tumours' nominal diameters in mm.

    Returns:
        The phantom.

    Raises:
        NnsslError: shape, spacing or tumour diameters out of range.
    """
    shape = _check_shape(shape)
    _check_tumour_range(tumour_mm)
    rng = np.random.default_rng(seed)
    if isinstance(spacing, SpacingRange):
        spacing = spacing.draw(rng)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise NnsslError(f"spacing must be 3 positive values (Z, Y, X) in mm, got {spacing}")
    frame = BodyFrame.draw(rng, shape, spacing)
    thorax = render_thorax(rng, frame)
    vessels = add_pulmonary_trees(rng, frame, thorax)  # (Z, Y, X) coverage in [0, 1]
    values = {tissue: rng.uniform(*TISSUE_HU[tissue]) for tissue in Tissue}
    lookup = np.array([values[tissue] for tissue in Tissue], dtype=np.float32)
    hu = lookup[thorax.tissue]  # (Z, Y, X)
    posterior = np.clip((frame.q / frame.aspect + 1.0) / 2.0, 0.0, 1.0)  # (1, Y, X), 0 front .. 1 back
    hu += np.where(thorax.tissue == Tissue.LUNG, np.float32(rng.uniform(0.5, 1.0) * LUNG_GRAVITY_HU) * posterior, 0)
    hu += vessels * (np.float32(values[Tissue.BLOOD]) - hu)
    thorax.tissue[vessels >= 0.5] = Tissue.BLOOD
    label = np.zeros(shape, dtype=np.uint8)
    tumours = add_tumours(rng, thorax.lung, spacing, hu, label, values[Tissue.TUMOUR], diameter_range_mm=tumour_mm)
    thorax.tissue[label == 1] = Tissue.TUMOUR
    image = _acquire(rng, hu, thorax.tissue, spacing)
    return Phantom(image, label, spacing, thorax.tissue, thorax.lung, tumours)


def _check_tumour_range(tumour_mm: tuple[float, float]) -> None:
    if len(tumour_mm) != 2 or not 0 < tumour_mm[0] <= tumour_mm[1]:
        raise NnsslError(f"tumour diameters must be a range 0 < MIN <= MAX in mm, got {tuple(tumour_mm)}")


def _check_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < MIN_SIDE:
        raise NnsslError(f"phantom shape must be 3 sizes (Z, Y, X) of at least {MIN_SIDE} voxels, got {shape}")
    return shape


def _acquire(rng: np.random.Generator, hu: np.ndarray, tissue: np.ndarray,
             spacing: tuple[float, float, float]) -> np.ndarray:
    """Smooth tissue texture, then correlated noise and the point-spread function in one Gaussian filter.

    Returns:
        int16 (Z, Y, X) HU clipped to the scanner range.
    """
    coarse = [max(2, math.ceil(n / c) + 1) for n, c in zip(hu.shape, TEXTURE_CELL, strict=True)]
    field = ndimage.zoom(rng.standard_normal(coarse).astype(np.float32),
                         [n / c for n, c in zip(hu.shape, coarse, strict=True)], order=1, mode="nearest")  # (Z, Y, X)
    amplitude = np.full(len(Tissue), DEFAULT_TEXTURE_HU, dtype=np.float32)
    for kind, value in TEXTURE_HU.items():
        amplitude[kind] = value
    hu += field[tuple(slice(0, n) for n in hu.shape)] * amplitude[tissue]
    sigma = (rng.uniform(*PSF_SIGMA_SLICE), *(2 * [rng.uniform(*PSF_SIGMA_INPLANE)]))
    # White noise of std n becomes n * prod(||k_axis||_2) after the separable Gaussian, so pre-scale it.
    gain = math.prod(float(np.linalg.norm(_gaussian_kernel(s))) for s in sigma)
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(rng.uniform(*NOISE_STD_HU) / gain)
    blurred = ndimage.gaussian_filter(hu, sigma, mode="nearest")
    return np.rint(np.clip(blurred, *HU_RANGE)).astype(np.int16)


def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The normalized 1D kernel ``scipy.ndimage.gaussian_filter`` uses for ``sigma`` (same radius rule)."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


@dataclass(frozen=True)
class _CaseJob:
    """One case to render and write (picklable, for worker processes)."""

    identifier: str
    seed: int
    images_dir: Path
    labels_dir: Path | None
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float] | SpacingRange
    tumour_mm: tuple[float, float] = DIAMETER_RANGE_MM


def case_seed(seed: int, split: str, index: int) -> int:
    """The seed of case ``index`` of ``split``; each split is an independent stream, so test cases do not depend
    on the number of training cases, and labeled cases never repeat unlabeled ones."""
    return int(np.random.SeedSequence((seed, SPLIT_STREAMS[split], index)).generate_state(1)[0])


def write_phantom_dataset(folder: Path, n: int, labeled: bool, seed: int, num_test: int = 0,
                          num_processes: int = 2, shape: tuple[int, int, int] = DEFAULT_SHAPE,
                          spacing: tuple[float, float, float] | SpacingRange = SpacingRange(),
                          overwrite: bool = False, progress: bool = True,
                          tumour_mm: tuple[float, float] = DIAMETER_RANGE_MM) -> Path:
    """Write ``n`` phantoms as an nnU-Net raw dataset.

    Unlabeled: ``imagesTr/<case>_0000.nii.gz`` + ``dataset.json`` (nnssl raw format). Labeled: also
    ``labelsTr/<case>.nii.gz`` (0 background, 1 tumour), and ``num_test`` held-out cases in ``imagesTs``/``labelsTs``.
    ``phantom_cases.json`` records each case's seed, spacing and tumours. The dataset is assembled in a hidden
    sibling folder and renamed into place at the end, so a killed run leaves no partial dataset behind.

    Args:
        folder: the dataset folder to create, e.g. ``$nnssl_raw/Dataset500_PhantomCTUnlabeled``.
        n: number of training cases.
        labeled: write tumour labels (nnU-Net raw format).
        seed: base seed; case seeds come from ``case_seed``.
        num_test: held-out labeled cases (labeled datasets only).
        num_processes: worker processes; 0 or 1 renders in this process.
        shape: voxels per case (Z, Y, X).
        spacing: fixed spacing (Z, Y, X) in mm, or the range each case's spacing is drawn from.
        overwrite: replace an existing ``folder``.
        progress: show a tqdm progress bar.
        tumour_mm: range of the tumours' nominal diameters in mm (all datasets: unlabeled phantoms have tumours too).

    Returns:
        ``folder``.

    Raises:
        NnsslError: bad counts, an existing folder without ``overwrite``, or the dataset id taken by another name.
    """
    folder = Path(folder)
    if n < 1 or num_test < 0 or num_processes < 0:
        raise NnsslError(f"need n >= 1, num_test >= 0 and num_processes >= 0; got {n}, {num_test}, {num_processes}")
    if num_test and not labeled:
        raise NnsslError("held-out test cases (--test) need labels: use --labeled")
    _check_shape(shape)
    _check_tumour_range(tumour_mm)
    _check_target(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        jobs = _make_jobs(staging, n, labeled, seed, num_test, shape, spacing, tumour_mm)
        cases = _run_jobs(jobs, num_processes, progress, desc=f"phantoms -> {folder.name}")
        description = "Procedural thorax CT phantoms (nnssl_make_phantoms)"
        dataset = {"name": folder.name, "description": description, "channel_names": CHANNEL_NAMES,
                   "file_ending": FILE_ENDING, "numTraining": n}
        if labeled:
            dataset["labels"] = LABELS
        write_json_atomic(dataset, staging / "dataset.json")
        write_json_atomic({"seed": seed, "shape": list(shape), "tumour_mm": list(tumour_mm), "cases": cases},
                          staging / CASES_FILE)
        _swap_into_place(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _check_target(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not overwrite:
        raise NnsslError(f"{folder} already exists; pass --overwrite (overwrite=True) to replace it, "
                         "or choose another dataset id/name")
    parsed = parse_dataset_name(folder.name)
    if parsed and folder.parent.is_dir():
        ids = {p: parse_dataset_name(p.name) for p in folder.parent.iterdir() if p.is_dir() and p != folder}
        clash = sorted(p.name for p, other in ids.items() if other and other[0] == parsed[0])
        if clash:
            raise NnsslError(f"dataset id {parsed[0]} is already used by {', '.join(clash)} in {folder.parent}; "
                             "choose another -d or remove that folder")


def _make_jobs(staging: Path, n: int, labeled: bool, seed: int, num_test: int, shape: tuple[int, int, int],
               spacing: tuple[float, float, float] | SpacingRange,
               tumour_mm: tuple[float, float] = DIAMETER_RANGE_MM) -> list[_CaseJob]:
    splits = [("train" if labeled else "unlabeled", "imagesTr", "labelsTr", n), ("test", "imagesTs", "labelsTs",
                                                                                  num_test)]
    jobs = []
    for split, images, labels, count in splits:
        if count == 0:
            continue
        (staging / images).mkdir()
        if labeled:
            (staging / labels).mkdir()
        prefix = "phantom_test" if split == "test" else "phantom"
        jobs += [_CaseJob(f"{prefix}_{i:04d}", case_seed(seed, split, i), staging / images,
                          staging / labels if labeled else None, tuple(shape), spacing, tuple(tumour_mm))
                 for i in range(count)]
    return jobs


def _run_jobs(jobs: list[_CaseJob], num_processes: int, progress: bool, desc: str) -> dict[str, dict]:
    bar = tqdm(total=len(jobs), desc=desc, unit="case", disable=not progress)
    cases: dict[str, dict] = {}
    with bar:
        if num_processes <= 1:
            for job in jobs:
                cases.update(_write_case(job))
                bar.update()
        else:
            # spawn: workers never inherit a parent's threads (torch, BLAS), which can deadlock after fork.
            context = multiprocessing.get_context("spawn")
            with context.Pool(min(num_processes, len(jobs))) as pool:
                for case in pool.imap_unordered(_write_case, jobs):
                    cases.update(case)
                    bar.update()
    return dict(sorted(cases.items()))


def _write_case(job: _CaseJob) -> dict[str, dict]:
    phantom = make_phantom(job.seed, job.shape, job.spacing, job.tumour_mm)
    _write_nifti(phantom.image, phantom.spacing, job.images_dir / f"{job.identifier}_0000{FILE_ENDING}")
    if job.labels_dir is not None:
        _write_nifti(phantom.label, phantom.spacing, job.labels_dir / f"{job.identifier}{FILE_ENDING}")
    return {job.identifier: {"seed": job.seed, "spacing": list(phantom.spacing),
                             "tumours": [asdict(t) for t in phantom.tumours]}}


def _write_nifti(array: np.ndarray, spacing: tuple[float, float, float], path: Path) -> None:
    """Write a (Z, Y, X) array with its spacing; SimpleITK takes spacing as (X, Y, Z)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    sitk.WriteImage(image, str(path), useCompression=True, compressionLevel=COMPRESSION_LEVEL)


def _swap_into_place(staging: Path, folder: Path) -> None:
    """Rename ``staging`` to ``folder``; an existing ``folder`` is moved aside first and deleted afterwards."""
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        os.replace(folder, old)
    os.replace(staging, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
