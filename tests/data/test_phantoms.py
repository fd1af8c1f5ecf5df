"""CT phantom generator: determinism, tissue HU, tumour placement and size, dataset writing, CLI end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnssl.cli.make_phantoms import main, parse_spacing
from nnssl.data import phantoms
from nnssl.data.phantom_anatomy import Tissue
from nnssl.data.phantom_tumours import DIAMETER_RANGE_MM, add_tumours
from nnssl.data.phantoms import DEFAULT_SHAPE, SpacingRange, case_seed, make_phantom, write_phantom_dataset
from nnssl.errors import NnsslError

SMALL = (32, 48, 48)
LABELED_SMALL = (40, 64, 64)  # big enough that most cases hold a tumour
SCRIPT = Path(sys.executable).parent / "nnssl_make_phantoms"


@pytest.fixture(scope="module")
def default_phantoms() -> list[phantoms.Phantom]:
    """Three phantoms at the default size (about a second each)."""
    return [make_phantom(seed) for seed in range(3)]


def read(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), tuple(reversed(image.GetSpacing()))


def test_same_seed_gives_identical_arrays_and_other_seeds_differ() -> None:
    first, again, other = make_phantom(7, SMALL), make_phantom(7, SMALL), make_phantom(8, SMALL)
    assert first.image.dtype == np.int16 and first.label.dtype == np.uint8 and first.image.shape == SMALL
    assert first.image.tobytes() == again.image.tobytes()
    assert first.label.tobytes() == again.label.tobytes()
    assert first.spacing == again.spacing
    assert first.image.tobytes() != other.image.tobytes()


def test_spacing_is_drawn_from_the_range_or_fixed() -> None:
    drawn = {make_phantom(seed, SMALL).spacing for seed in range(3)}
    assert len(drawn) == 3
    for z, y, x in drawn:
        assert 1.5 <= z <= 3.0 and 0.7 <= y <= 1.0 and y == x
    assert make_phantom(1, SMALL, spacing=(2.0, 0.5, 0.6)).spacing == (2.0, 0.5, 0.6)


def test_tissue_classes_have_ct_values(default_phantoms: list[phantoms.Phantom]) -> None:
    for phantom in default_phantoms:
        image, tissue = phantom.image.astype(float), phantom.tissue

        def mean(*kinds: Tissue, image: np.ndarray = image, tissue: np.ndarray = tissue) -> float:
            return float(image[np.isin(tissue, kinds)].mean())

        assert image.shape == DEFAULT_SHAPE
        assert mean(Tissue.AIR) == pytest.approx(-1000, abs=30)
        assert mean(Tissue.LUNG) < -600
        assert -150 < mean(Tissue.FAT) < -50
        assert 0 < mean(Tissue.MUSCLE, Tissue.SOFT, Tissue.LIVER) < 100
        assert mean(Tissue.CORTEX, Tissue.MARROW) > 300
        assert image[tissue == Tissue.CORTEX].max() > 700
        # A body, lungs and bone of plausible extent, not a sliver.
        body = tissue != Tissue.AIR
        assert 0.2 < body.mean() < 0.8
        assert 0.15 < phantom.lung_mask.sum() / body.sum() < 0.6


def test_tumours_lie_in_the_lungs_with_realistic_size_and_hu(default_phantoms: list[phantoms.Phantom]) -> None:
    tumours = [(p, t) for p in default_phantoms for t in p.tumours]
    assert tumours, "none of the default-size phantoms has a tumour"
    for phantom in default_phantoms:
        label = phantom.label.astype(bool)
        assert not (label & ~phantom.lung_mask).any(), "tumour voxels outside the lungs"
        assert np.array_equal(label, phantom.tissue == Tissue.TUMOUR)
        parts, count = ndimage.label(label)
        assert count == len(phantom.tumours)
    for phantom, tumour in tumours:
        parts, _ = ndimage.label(phantom.label)
        centre = tuple(int(round(c / s)) for c, s in zip(tumour.centre_mm, phantom.spacing, strict=True))
        own = parts == parts[centre]
        voxel_mm3 = float(np.prod(phantom.spacing))
        equivalent = (6 * own.sum() * voxel_mm3 / np.pi) ** (1 / 3)
        assert DIAMETER_RANGE_MM[0] <= tumour.diameter_mm <= DIAMETER_RANGE_MM[1]
        assert equivalent == pytest.approx(tumour.diameter_mm, rel=0.25)
        assert tumour.volume_mm3 == pytest.approx(own.sum() * voxel_mm3, abs=0.1)
        extent_mm = [(ax.max() - ax.min() + 1) * s for ax, s in zip(np.nonzero(own), phantom.spacing, strict=True)]
        assert max(extent_mm) <= DIAMETER_RANGE_MM[1] * 1.6
        hu = phantom.image[own].astype(float)
        lung_hu = phantom.image[phantom.tissue == Tissue.LUNG].mean()
        assert hu.max() > 0, "the tumour never reaches soft-tissue HU"
        assert hu.mean() > lung_hu + 500, "the tumour is not visible against the lung"
        if tumour.diameter_mm >= 10:
            core = ndimage.distance_transform_edt(own, sampling=phantom.spacing) >= 1.5 * max(phantom.spacing[1:])
            assert -50 < phantom.image[core].mean() < 100


def test_add_tumours_places_the_requested_count_apart_inside_a_lung() -> None:
    spacing = (2.0, 1.0, 1.0)
    z, y, x = np.ogrid[:40, :80, :80]
    lung = ((z - 20) * 2.0) ** 2 + (y - 40.0) ** 2 + (x - 40.0) ** 2 <= 36.0**2
    hu = np.where(lung, -850.0, 40.0).astype(np.float32)
    label = np.zeros(lung.shape, dtype=np.uint8)
    tumours = add_tumours(np.random.default_rng(0), lung, spacing, hu, label, tumour_hu=45.0, count=3)
    assert len(tumours) == 3
    assert ndimage.label(label)[1] == 3
    assert not (label.astype(bool) & ~lung).any()
    assert hu[label == 1].mean() > -200


def test_tumour_diameter_range_is_respected() -> None:
    spacing = (2.0, 1.0, 1.0)
    z, y, x = np.ogrid[:40, :80, :80]
    lung = ((z - 20) * 2.0) ** 2 + (y - 40.0) ** 2 + (x - 40.0) ** 2 <= 36.0**2
    for low, high in ((5.0, 8.0), (20.0, 25.0)):
        hu = np.where(lung, -850.0, 40.0).astype(np.float32)
        label = np.zeros(lung.shape, dtype=np.uint8)
        tumours = add_tumours(np.random.default_rng(1), lung, spacing, hu, label, tumour_hu=45.0, count=2,
                              diameter_range_mm=(low, high))
        assert tumours and all(low <= t.diameter_mm <= high for t in tumours), tumours
    with pytest.raises(NnsslError, match="0 < MIN <= MAX"):
        make_phantom(0, SMALL, tumour_mm=(30.0, 10.0))


def test_labeled_phantoms_mostly_have_a_tumour() -> None:
    counts = [len(make_phantom(seed, LABELED_SMALL).tumours) for seed in range(8)]
    assert sum(c > 0 for c in counts) >= 6, counts
    assert max(counts) <= 3


def test_written_dataset_reads_back_with_its_spacing(tmp_path: Path) -> None:
    folder = write_phantom_dataset(tmp_path / "Dataset599_Test", 2, labeled=True, seed=3, num_test=1,
                                   num_processes=0, shape=SMALL, progress=False)
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT"} and dataset["file_ending"] == ".nii.gz"
    assert dataset["numTraining"] == 2 and dataset["labels"] == {"background": 0, "tumour": 1}
    cases = json.loads((folder / "phantom_cases.json").read_text())["cases"]
    assert sorted(cases) == ["phantom_0000", "phantom_0001", "phantom_test_0000"]
    for case, split, images, labels in (("phantom_0001", "train", "imagesTr", "labelsTr"),
                                        ("phantom_test_0000", "test", "imagesTs", "labelsTs")):
        image, spacing = read(folder / images / f"{case}_0000.nii.gz")
        label, label_spacing = read(folder / labels / f"{case}.nii.gz")
        expected = make_phantom(case_seed(3, split, int(case[-4:])), SMALL)
        assert np.allclose(spacing, expected.spacing) and np.allclose(label_spacing, expected.spacing)
        assert np.allclose(spacing, cases[case]["spacing"])
        assert image.dtype == np.int16 and np.array_equal(image, expected.image)
        assert np.array_equal(label, expected.label)
    assert [p.name for p in tmp_path.iterdir()] == ["Dataset599_Test"], "staging folder left behind"


def test_a_failed_run_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fail_second(job: object) -> dict:
        calls.append(job)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return {}

    monkeypatch.setattr(phantoms, "_write_case", fail_second)
    with pytest.raises(RuntimeError):
        write_phantom_dataset(tmp_path / "Dataset598_Test", 3, labeled=False, seed=0, num_processes=0,
                              shape=SMALL, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NnsslError, match="--labeled"):
        write_phantom_dataset(tmp_path / "Dataset597_T", 2, labeled=False, seed=0, num_test=1)
    with pytest.raises(NnsslError, match="at least 16"):
        make_phantom(0, (8, 48, 48))
    with pytest.raises(NnsslError, match="low <= high"):
        SpacingRange(slice_mm=(3.0, 1.0))
    assert parse_spacing(["1.5:3", "0.8"]) == SpacingRange((1.5, 3.0), (0.8, 0.8))
    with pytest.raises(NnsslError, match="1:x"):
        parse_spacing(["1:x", "0.8"])
    assert not list(tmp_path.iterdir())


def test_missing_env_var_is_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("nnssl_raw", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["--unlabeled", "1", "-d", "500"])
    assert exit_info.value.code == 2
    assert "nnssl_raw is not set" in capsys.readouterr().err


def test_output_root_replaces_the_env_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_raw", raising=False)
    code = main(["--labeled", "1", "-d", "503", "--output-root", str(tmp_path), "--shape", *map(str, SMALL),
                 "-np", "0"])
    assert code == 0
    assert (tmp_path / "Dataset503_PhantomLungTumour" / "labelsTr" / "phantom_0000.nii.gz").is_file()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} is not installed; run `pip install -e .`")
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def test_cli_writes_unlabeled_and_labeled_datasets(nnssl_env: dict[str, Path]) -> None:
    small = ["--shape", *map(str, SMALL)]
    done = run_cli("--unlabeled", "3", "-d", "500", "--seed", "4", "-np", "2", *small)
    assert done.returncode == 0, done.stderr
    unlabeled = nnssl_env["nnssl_raw"] / "Dataset500_PhantomCTUnlabeled"
    assert sorted(p.name for p in unlabeled.iterdir()) == ["dataset.json", "imagesTr", "phantom_cases.json"]
    assert len(list((unlabeled / "imagesTr").iterdir())) == 3
    assert "labels" not in json.loads((unlabeled / "dataset.json").read_text())
    # Two worker processes give the same bytes as rendering in this process.
    image, _ = read(unlabeled / "imagesTr" / "phantom_0002_0000.nii.gz")
    assert np.array_equal(image, make_phantom(case_seed(4, "unlabeled", 2), SMALL).image)

    preview = nnssl_env["nnssl_raw"] / "preview.png"
    done = run_cli("--labeled", "2", "--test", "1", "-d", "501", "-n", "Lungs", "--spacing", "2", "0.9:1", *small,
                   "--preview", str(preview))
    assert done.returncode == 0, done.stderr
    assert preview.stat().st_size > 0
    labeled = nnssl_env["nnUNet_raw"] / "Dataset501_Lungs"
    assert len(list((labeled / "labelsTr").iterdir())) == 2 and len(list((labeled / "labelsTs").iterdir())) == 1
    _, spacing = read(labeled / "imagesTr" / "phantom_0000_0000.nii.gz")
    assert spacing[0] == pytest.approx(2.0) and 0.9 <= spacing[1] <= 1.0


def test_cli_refuses_an_existing_folder_unless_overwrite(nnssl_env: dict[str, Path]) -> None:
    args = ["--unlabeled", "1", "-d", "500", "--shape", *map(str, SMALL), "-np", "0"]
    assert run_cli(*args).returncode == 0
    folder = nnssl_env["nnssl_raw"] / "Dataset500_PhantomCTUnlabeled"
    marker = folder / "imagesTr" / "keep.txt"
    marker.write_text("mine")
    refused = run_cli(*args)
    assert refused.returncode == 2
    assert "already exists" in refused.stderr and "--overwrite" in refused.stderr
    assert marker.exists()
    clash = run_cli("--unlabeled", "1", "-d", "500", "-n", "Other", "--shape", *map(str, SMALL))
    assert clash.returncode == 2 and "Dataset500_PhantomCTUnlabeled" in clash.stderr
    assert run_cli(*args, "--overwrite").returncode == 0
    assert not marker.exists()
    assert sorted(p.name for p in nnssl_env["nnssl_raw"].iterdir()) == ["Dataset500_PhantomCTUnlabeled"]
