"""Held-out cases and k-case training subsets of the label-efficiency study.

Both are drawn deterministically (a seed) and stratified by tumour size: cases are sorted by their tumour voxel count
(any label > 0 in ``labelsTr``), the sorted list is cut into n strata of (nearly) equal count and one case is drawn from
each stratum. So every subset, even k = 2, spans small and large tumours, and the held-out set does too. Held-out cases
are removed from the pool before any subset is drawn, so they never enter training.
"""
from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnssl.data.raw_dataset import IMAGES_TR, list_raw_cases, load_dataset_json, reader_for
from nnssl.errors import NnsslError

LABELS_TR = "labelsTr"
ALL = "all"  # --labels value: every case of the training pool
HELDOUT_FRACTION = 1 / 3  # default share of the labeled cases kept for evaluation
MIN_HELDOUT = 2
MAX_HELDOUT = 50  # nnU-Net's final validation predicts every held-out case in every run
HELDOUT_STREAM, SUBSET_STREAM = 0, 1  # independent random streams of the study seed
HASH_CHUNK = 1 << 20
GEOMETRY_DIGITS = 4  # header values compared to 1e-4 mm (converted copies may round differently)

LabelCount = int | None  # None = all


@dataclass(frozen=True)
class LabeledCase:
    """A labeled training case of an nnU-Net raw dataset.

    Attributes:
        identifier: nnU-Net case id.
        image_files: one file per channel.
        label_file: its ``labelsTr`` file.
        tumour_voxels: voxels with label > 0.
    """

    identifier: str
    image_files: tuple[Path, ...]
    label_file: Path
    tumour_voxels: int


def parse_label_count(text: str) -> LabelCount:
    """``"4"`` -> 4, ``"all"`` -> None.

    Raises:
        NnsslError: neither a positive integer nor ``all``.
    """
    if text.strip().lower() == ALL:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise NnsslError(f"--labels value {text!r} is not a positive number of cases or 'all' (e.g. --labels 2 4 all)")
    return value


def label_count_name(k: LabelCount) -> str:
    """4 -> ``"4"``, None -> ``"all"``."""
    return ALL if k is None else str(k)


def list_labeled_cases(raw_folder: Path) -> list[LabeledCase]:
    """The ``imagesTr`` cases of an nnU-Net raw dataset with their label files and tumour sizes.

    Raises:
        NnsslError: the dataset's structure problems, or a case without a label file (naming it).
    """
    raw_folder = Path(raw_folder)
    ending = load_dataset_json(raw_folder)["file_ending"]
    reader = reader_for(ending)()
    cases, missing = [], []
    for case in list_raw_cases(raw_folder):
        label = raw_folder / LABELS_TR / f"{case.identifier}{ending}"
        if not label.is_file():
            missing.append(label.name)
            continue
        seg, _ = reader.read_seg(str(label))  # (1, Z, Y, X)
        cases.append(LabeledCase(case.identifier, case.files, label, int(np.count_nonzero(seg > 0))))
    if missing:
        raise NnsslError(f"{raw_folder / LABELS_TR} lacks {len(missing)} label file(s): {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}; the study needs a label for every imagesTr case")
    return cases


def default_heldout_count(num_cases: int) -> int:
    """A third of the cases, at least :data:`MIN_HELDOUT`, at most :data:`MAX_HELDOUT`."""
    return min(MAX_HELDOUT, max(MIN_HELDOUT, round(num_cases * HELDOUT_FRACTION)))


def _by_size(cases: Sequence[LabeledCase]) -> list[LabeledCase]:
    return sorted(cases, key=lambda c: (c.tumour_voxels, c.identifier))


def stratified_draw(cases: Sequence[LabeledCase], n: int, rng: np.random.Generator) -> list[str]:
    """One case from each of ``n`` equal-count tumour-size strata; identifiers in size order.

    Raises:
        NnsslError: ``n`` is not between 1 and ``len(cases)``.
    """
    if not 1 <= n <= len(cases):
        raise NnsslError(f"cannot draw {n} of {len(cases)} cases")
    strata = np.array_split(np.arange(len(cases)), n)
    ordered = _by_size(cases)
    return [ordered[int(rng.choice(stratum))].identifier for stratum in strata]


def draw_heldout(cases: Sequence[LabeledCase], num_heldout: int, seed: int) -> list[str]:
    """The evaluation cases (sorted ids): ``num_heldout`` stratified by tumour size.

    Raises:
        NnsslError: fewer than ``num_heldout + 1`` cases (the training pool would be empty).
    """
    if not 1 <= num_heldout < len(cases):
        raise NnsslError(f"--holdout {num_heldout} must be between 1 and {len(cases) - 1} for {len(cases)} labeled "
                         "cases (the rest is the training pool)")
    return sorted(stratified_draw(cases, num_heldout, np.random.default_rng([seed, HELDOUT_STREAM])))


def training_pool(cases: Sequence[LabeledCase], heldout: Sequence[str]) -> list[LabeledCase]:
    """All cases that are not held out."""
    held = set(heldout)
    return [c for c in cases if c.identifier not in held]


def draw_subset(pool: Sequence[LabeledCase], k: LabelCount, repeat: int, seed: int) -> list[str]:
    """The ``k`` training cases of repeat ``repeat`` (sorted ids); ``k`` None = the whole pool.

    Raises:
        NnsslError: ``k`` is larger than the pool.
    """
    if k is None:
        return sorted(c.identifier for c in pool)
    if k > len(pool):
        raise NnsslError(f"--labels {k} exceeds the {len(pool)} training cases left after holding out; use at most "
                         f"{len(pool)} or 'all', or a smaller --holdout")
    return sorted(stratified_draw(pool, k, np.random.default_rng([seed, SUBSET_STREAM, k, repeat])))


def heldout_images_seen(heldout_images: dict[str, tuple[Path, ...]], pretrain_raw: Path) -> list[str] | None:
    """Held-out cases whose images are also pretraining images: the same file or a link to it, identical bytes, or
    (a converted copy) the same image geometry and identical voxels.

    Args:
        heldout_images: held-out case id -> its image files (one per channel).
        pretrain_raw: the pretraining dataset in ``$nnssl_raw``.

    Returns:
        The identifiers seen by pretraining, or None when ``pretrain_raw`` has no ``imagesTr`` to compare with.
    """
    images = Path(pretrain_raw) / IMAGES_TR
    if not images.is_dir():
        return None
    pretraining = [p for p in images.iterdir() if p.is_file() and not p.name.startswith(".")]
    real = {os.path.realpath(p) for p in pretraining}
    by_size: dict[int, list[Path]] = {}
    by_geometry: dict[tuple, list[Path]] = {}
    for path in pretraining:
        by_size.setdefault(path.stat().st_size, []).append(path)
        by_geometry.setdefault(_geometry(path), []).append(path)
    seen = []
    for identifier, files in sorted(heldout_images.items()):
        for image in files:
            same_size = by_size.get(image.stat().st_size, [])
            same_geometry = by_geometry.get(_geometry(image), []) if _geometry(image) else []
            if (os.path.realpath(image) in real
                    or (same_size and _sha256(image) in {_sha256(p) for p in same_size})
                    or any(_same_voxels(image, p) for p in same_geometry)):
                seen.append(identifier)
                break
    return seen


@functools.cache
def _geometry(path: Path) -> tuple:
    """Size, spacing, origin and direction from the image header (no voxels read); () if SimpleITK cannot read it."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return ()
    return (reader.GetSize(), *(tuple(round(v, GEOMETRY_DIGITS) for v in values) for values in
                                (reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())))


@functools.cache
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _same_voxels(a: Path, b: Path) -> bool:
    return bool(np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(a))),
                               sitk.GetArrayFromImage(sitk.ReadImage(str(b)))))


def subset_folder_name(k: LabelCount, repeat: int) -> str:
    """``k004_r0`` for 4 cases in repeat 0, ``kall_r0`` for the whole pool."""
    return f"k{ALL if k is None else f'{k:03d}'}_r{repeat}"
