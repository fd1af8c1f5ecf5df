"""Body-biased crops: shape, padding, determinism per sample index, independence from the worker count."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nnssl.augment.transforms import build_pretraining_transforms
from nnssl.data.loader import BodyCropDataset, StepBatchSampler, build_loader, crop_with_padding
from nnssl.errors import NnsslError

PATCH = (32, 32, 32)


def test_crop_with_padding_inside_and_outside() -> None:
    data = np.arange(2 * 4 * 5 * 6, dtype=np.float32).reshape(2, 4, 5, 6)
    inside = crop_with_padding(data, np.array([1, 1, 1]), (2, 3, 4))
    np.testing.assert_array_equal(inside, data[:, 1:3, 1:4, 1:5])
    padded = crop_with_padding(data, np.array([-1, 0, 3]), (3, 5, 6))  # (C, 3, 5, 6), sticks out on Z and X
    np.testing.assert_array_equal(padded[:, 1:, :, :3], data[:, :2, :, 3:])
    assert padded[0, 0].max() == data[0, :2, :, 3:].min()  # outside = the crop's minimum, per channel
    assert padded[1, :, :, 3:].max() == data[1, :2, :, 3:].min()


def test_dataset_samples_are_deterministic(tiny_preprocessed: Path) -> None:
    folder = tiny_preprocessed / "nnsslPlans_3d"
    transform = build_pretraining_transforms(PATCH)
    a = BodyCropDataset(folder, PATCH, seed=1, p_body_crop=0.9, transform=transform)
    b = BodyCropDataset(folder, PATCH, seed=1, p_body_crop=0.9, transform=build_pretraining_transforms(PATCH))
    other_seed = BodyCropDataset(folder, PATCH, seed=2, p_body_crop=0.9, transform=transform)
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    x = a[5]
    assert torch.rand(1) == before, "sampling must not move the global torch RNG"
    assert x.shape == (1, *PATCH) and x.dtype == torch.float32
    assert torch.equal(x, b[5])
    assert not torch.equal(x, a[6])
    assert not torch.equal(x, other_seed[5])


def test_body_bias(tiny_preprocessed: Path) -> None:
    folder = tiny_preprocessed / "nnsslPlans_3d"
    body = BodyCropDataset(folder, (8, 8, 8), seed=0, p_body_crop=1.0)
    uniform = BodyCropDataset(folder, (8, 8, 8), seed=0, p_body_crop=0.0)
    # background is -2, body >= 0.5: body-centred crops contain far more body voxels
    body_share = np.mean([(body[i] > -1).float().mean().item() for i in range(30)])
    uniform_share = np.mean([(uniform[i] > -1).float().mean().item() for i in range(30)])
    assert body_share > uniform_share + 0.15, (body_share, uniform_share)


def test_sampler_shards_ranks_without_overlap() -> None:
    per_rank = [list(StepBatchSampler(batch_size=2, rank=r, world_size=2, start=3, stop=6)) for r in range(2)]
    flat = [i for rank in per_rank for batch in rank for i in batch]
    assert len(flat) == len(set(flat)) == 12
    assert per_rank[0][0] == [12, 13] and per_rank[1][0] == [14, 15]


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_do_not_depend_on_workers(tiny_preprocessed: Path, workers: int) -> None:
    folder = tiny_preprocessed / "nnsslPlans_3d"
    dataset = BodyCropDataset(folder, PATCH, seed=3, p_body_crop=0.9, transform=build_pretraining_transforms(PATCH))
    reference = torch.stack([dataset[i] for i in (4, 5)])  # micro-batch 2 of rank 0, batch 2, world 1
    batches = list(build_loader(dataset, batch_size=2, rank=0, world_size=1, start=2, stop=4, num_workers=workers,
                                pin_memory=False))
    assert len(batches) == 2 and batches[0].shape == (2, 1, *PATCH)
    assert torch.equal(batches[0], reference)


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NnsslError, match="nnssl_plan_and_preprocess"):
        BodyCropDataset(tmp_path, PATCH, seed=0, p_body_crop=0.5)
