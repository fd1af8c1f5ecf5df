"""Held-out set and k-case subsets of ``nnssl_benchmark``: deterministic, stratified by tumour size, disjoint."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnssl.cli.benchmark_subsets import (
    LabeledCase,
    draw_heldout,
    draw_subset,
    heldout_images_seen,
    parse_label_count,
    stratified_draw,
    subset_folder_name,
    training_pool,
)
from nnssl.errors import NnsslError

NUM_CASES = 24
NUM_HELDOUT = 8


def _cases(num: int = NUM_CASES, seed: int = 3) -> list[LabeledCase]:
    """Cases with distinct tumour sizes in shuffled id order (so id order says nothing about size)."""
    sizes = np.random.default_rng(seed).permutation(num) * 10  # one tumour-free case (size 0)
    return [LabeledCase(f"case_{i:03d}", (), Path(), int(s)) for i, s in enumerate(sizes)]


def _rank(cases: list[LabeledCase]) -> dict[str, int]:
    ordered = sorted(cases, key=lambda c: (c.tumour_voxels, c.identifier))
    return {c.identifier: r for r, c in enumerate(ordered)}


def test_heldout_and_subsets_are_deterministic() -> None:
    cases = _cases()
    assert draw_heldout(cases, NUM_HELDOUT, seed=0) == draw_heldout(list(reversed(cases)), NUM_HELDOUT, seed=0)
    pool = training_pool(cases, draw_heldout(cases, NUM_HELDOUT, seed=0))
    assert draw_subset(pool, 4, repeat=1, seed=0) == draw_subset(list(reversed(pool)), 4, repeat=1, seed=0)
    draws = {tuple(draw_subset(pool, 4, repeat=r, seed=0)) for r in range(5)}
    assert len(draws) > 1, "repeats must draw different subsets"
    assert draw_heldout(cases, NUM_HELDOUT, seed=0) != draw_heldout(cases, NUM_HELDOUT, seed=1)


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_draws_one_case_per_tumour_size_stratum(n: int) -> None:
    cases = _cases()
    rank = _rank(cases)
    strata = np.array_split(np.arange(len(cases)), n)
    for seed in range(5):
        picked = sorted(rank[i] for i in stratified_draw(cases, n, np.random.default_rng(seed)))
        assert [int(np.searchsorted([s[0] for s in strata], r, side="right")) - 1 for r in picked] == list(range(n))


def test_subsets_span_small_and_large_tumours() -> None:
    cases = _cases()
    pool = training_pool(cases, draw_heldout(cases, NUM_HELDOUT, seed=0))
    sizes = {c.identifier: c.tumour_voxels for c in pool}
    median = float(np.median(list(sizes.values())))
    for repeat in range(3):
        chosen = [sizes[i] for i in draw_subset(pool, 2, repeat, seed=0)]
        assert min(chosen) <= median <= max(chosen)


def test_heldout_cases_never_enter_training() -> None:
    cases = _cases()
    heldout = draw_heldout(cases, NUM_HELDOUT, seed=0)
    pool = training_pool(cases, heldout)
    assert len(heldout) == NUM_HELDOUT and len(pool) == NUM_CASES - NUM_HELDOUT
    assert {c.identifier for c in pool} | set(heldout) == {c.identifier for c in cases}
    for k in (1, 2, 4, 8, None):
        for repeat in range(3):
            subset = draw_subset(pool, k, repeat, seed=0)
            assert not set(subset) & set(heldout)
            assert len(subset) == (len(pool) if k is None else k) == len(set(subset))


def test_bad_counts_are_refused() -> None:
    cases = _cases(6)
    with pytest.raises(NnsslError, match="between 1 and 5"):
        draw_heldout(cases, 6, seed=0)
    pool = training_pool(cases, draw_heldout(cases, 2, seed=0))
    with pytest.raises(NnsslError, match="exceeds the 4 training cases"):
        draw_subset(pool, 5, 0, seed=0)
    assert parse_label_count("all") is None and parse_label_count("ALL") is None and parse_label_count("3") == 3
    for bad in ("0", "-2", "two"):
        with pytest.raises(NnsslError, match="--labels value"):
            parse_label_count(bad)
    assert subset_folder_name(4, 1) == "k004_r1" and subset_folder_name(None, 0) == "kall_r0"


def test_heldout_images_seen_by_pretraining(tmp_path: Path) -> None:
    labeled = tmp_path / "labeled"
    labeled.mkdir()
    files = {}
    for i in range(3):
        files[f"c{i}"] = (labeled / f"c{i}_0000.nii.gz",)
        files[f"c{i}"][0].write_bytes(bytes([i]) * 100)
    pretrain = tmp_path / "Dataset500_X"
    assert heldout_images_seen(files, pretrain) is None  # nothing to compare with
    (pretrain / "imagesTr").mkdir(parents=True)
    (pretrain / "imagesTr" / "u_0000.nii.gz").write_bytes(b"\x09" * 100)  # same size, other bytes
    assert heldout_images_seen(files, pretrain) == []
    (pretrain / "imagesTr" / "link_0000.nii.gz").symlink_to(files["c0"][0])  # nnssl_convert --from-nnunet links
    shutil.copy(files["c2"][0], pretrain / "imagesTr" / "copy_0000.nii.gz")  # a copy under another name
    assert heldout_images_seen(files, pretrain) == ["c0", "c2"]


def test_converted_copies_of_heldout_images_are_recognised(tmp_path: Path) -> None:
    """``nnssl_convert -i`` rewrites images: other bytes, same geometry and voxels."""
    rng = np.random.default_rng(0)
    files = {}
    for i in range(2):
        image = sitk.GetImageFromArray(rng.integers(-1000, 1000, (6, 8, 8)).astype(np.int16))
        image.SetSpacing((0.8, 0.8, 3.0))
        files[f"c{i}"] = (tmp_path / f"c{i}_0000.nii.gz",)
        sitk.WriteImage(image, str(files[f"c{i}"][0]))
    converted = tmp_path / "Dataset500_X" / "imagesTr"
    converted.mkdir(parents=True)
    sitk.WriteImage(sitk.ReadImage(str(files["c1"][0])), str(converted / "x_0000.nrrd"))  # other format and bytes
    decoy = sitk.ReadImage(str(files["c0"][0])) + 1  # same geometry, other voxels
    sitk.WriteImage(decoy, str(converted / "y_0000.nii.gz"))
    assert heldout_images_seen(files, converted.parent) == ["c1"]
