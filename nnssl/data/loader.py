"""Random body-biased crops from nnssl's preprocessed folder, reproducible per sample index.

Every sample is a pure function of ``(seed, sample index)``: the case, the crop position and the augmentation draw
come from generators seeded with that pair. A run's batches are therefore the same whatever the worker count, and a
continued run (``--c``) that starts the sampler at the right index sees exactly the batches the uninterrupted run saw.

Sample indices are laid out so that ranks never overlap: micro-batch ``m`` of rank ``r`` in a world of ``W`` processes
with batch size ``B`` holds samples ``(m * W + r) * B + b`` for ``b < B`` (:class:`StepBatchSampler`).
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

from nnssl.data.dataset import BODY_LOCATIONS_KEY, complete_identifiers
from nnssl.errors import NnsslError

Transform = Callable[..., dict]


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed python, numpy and torch (CPU) global RNGs for the block, then restore them.

    batchgeneratorsv2 transforms draw from the global ``np.random`` and ``torch`` generators; this makes one sample's
    augmentation reproducible without disturbing the training process's own RNG streams (with ``-np 0`` the dataset
    runs in the training process).
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def crop_with_padding(data: np.ndarray, lower: np.ndarray, patch_size: tuple[int, int, int]) -> np.ndarray:
    """Read ``data[:, lower:lower + patch_size]``, padding the parts outside the volume.

    Args:
        data: (C, Z, Y, X) array-like (numpy or blosc2 NDArray; only the overlapping box is read).
        lower: (3,) corner of the crop in voxels, may be negative or reach past the end.
        patch_size: (Z, Y, X).

    Returns:
        (C, *patch_size) float32; outside voxels take the crop's minimum (air, for CT).
    """
    shape = np.asarray(data.shape[1:])
    upper = lower + np.asarray(patch_size)
    src_lo, src_hi = np.clip(lower, 0, shape), np.clip(upper, 0, shape)
    out = np.empty((data.shape[0], *patch_size), dtype=np.float32)
    if np.any(src_hi <= src_lo):  # the crop misses the volume entirely
        out.fill(0.0)
        return out
    src = (slice(None), *(slice(int(a), int(b)) for a, b in zip(src_lo, src_hi, strict=True)))
    box = np.asarray(data[src], dtype=np.float32)
    # (C, z, y, x) with z, y, x <= patch_size
    dst_lo = src_lo - lower
    dst = (slice(None), *(slice(int(a), int(a) + n) for a, n in zip(dst_lo, box.shape[1:], strict=True)))
    if box.shape[1:] != tuple(patch_size):
        out[:] = box.reshape(box.shape[0], -1).min(axis=1)[:, None, None, None]
    out[dst] = box
    return out


class BodyCropDataset(torch.utils.data.Dataset):
    """Map-style dataset over sample indices: index ``i`` -> one (C, Z, Y, X) float32 crop.

    Args:
        folder: ``nnssl_preprocessed/DatasetXXX_Name/<plans>_3d`` (nnU-Net 2.8 blosc2 layout).
        patch_size: crop (Z, Y, X).
        seed: base seed of the run.
        p_body_crop: share of crops centred on a random entry of the case's ``body_locations``; the rest are placed
            uniformly (cases smaller than the patch land at a random offset inside it).
        transform: batchgeneratorsv2-style callable ``transform(image=Tensor) -> {"image": Tensor}`` or None.

    Raises:
        NnsslError: the folder is missing or holds no cases.
    """

    def __init__(self, folder: Path, patch_size: tuple[int, int, int], seed: int, p_body_crop: float,
                 transform: Transform | None = None) -> None:
        self.folder = Path(folder)
        # Only complete cases (the .pkl is written last): a killed preprocessing run leaves no half case in use.
        self.identifiers: list[str] = complete_identifiers(self.folder)
        if not self.identifiers:
            raise NnsslError(f"no preprocessed cases in {self.folder}; run `nnssl_plan_and_preprocess -d <id>` "
                             "(or nnssl_preprocess) first")
        self.dataset = nnUNetDatasetBlosc2(str(self.folder), identifiers=list(self.identifiers))
        self.patch_size = tuple(int(v) for v in patch_size)
        self.seed = int(seed)
        self.p_body_crop = float(p_body_crop)
        self.transform = transform

    def __len__(self) -> int:
        # Samples are addressed by an unbounded index; the sampler decides how many are drawn.
        return 2**62

    def sample_rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(index)])

    def crop_corner(self, shape: tuple[int, ...], body_locations: np.ndarray | None,
                    rng: np.random.Generator) -> np.ndarray:
        """Lower corner (3,) of a crop in a volume of spatial ``shape`` (Z, Y, X)."""
        patch = np.asarray(self.patch_size)
        size = np.asarray(shape)
        use_body = body_locations is not None and len(body_locations) > 0 and rng.random() < self.p_body_crop
        if use_body:
            center = np.asarray(body_locations[rng.integers(len(body_locations))])
            return center - patch // 2
        low, high = np.minimum(0, size - patch), np.maximum(0, size - patch)
        return rng.integers(low, high + 1)

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = self.sample_rng(index)
        identifier = self.identifiers[int(rng.integers(len(self.identifiers)))]
        try:
            data, _seg, _prev, properties = self.dataset.load_case(identifier)
        except Exception as err:  # blosc2/pickle errors vary by kind of damage
            raise NnsslError(f"cannot read preprocessed case {self.folder / identifier}.b2nd ({err}); delete it and "
                             "re-run nnssl_preprocess") from None
        corner = self.crop_corner(data.shape[1:], properties.get(BODY_LOCATIONS_KEY), rng)
        patch = torch.from_numpy(crop_with_padding(data, corner, self.patch_size))  # (C, Z, Y, X)
        if self.transform is not None:
            with seeded_global_rng(int(rng.integers(2**62))):
                patch = self.transform(image=patch)["image"]
        return patch.contiguous()


class StepBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields this rank's micro-batches of sample indices, from micro-batch ``start`` to ``stop`` (exclusive)."""

    def __init__(self, batch_size: int, rank: int, world_size: int, start: int, stop: int) -> None:
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for micro in range(self.start, self.stop):
            first = (micro * self.world_size + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))


def _worker_init(_worker_id: int) -> None:
    # Each worker does small numpy/torch ops; one thread each avoids oversubscribing the cores the model uses.
    torch.set_num_threads(1)


def build_loader(dataset: BodyCropDataset, batch_size: int, rank: int, world_size: int, start: int, stop: int,
                 num_workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """DataLoader over micro-batches ``[start, stop)`` of this rank; yields (B, C, Z, Y, X) float32 tensors.

    It gets its own ``torch.Generator`` so creating it never draws from the global RNG (which a continued run restores
    from the checkpoint and must find untouched).
    """
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=StepBatchSampler(batch_size, rank, world_size, start, stop),
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(dataset.seed),
    )
