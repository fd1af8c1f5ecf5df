"""``nnssl_transfer_plans``: matched plans, link, nnU-Net preprocessing with the pretraining's CT statistics, errors."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

from nnssl.cli.transfer_plans import main, transfer_configuration
from nnssl.config.pretrained import PRETRAINED_KEY, PretrainedBlock, file_sha256, read_link
from nnssl.errors import NnsslError
from nnssl.training.checkpoint import load_pretrained_encoder

PRETRAIN_SPACING = (2.5, 1.25, 1.25)  # coarser than the phantoms' (2, 1, 1)


def _block(path: Path) -> PretrainedBlock:
    header, _ = load_pretrained_encoder(path)
    return PretrainedBlock.from_header(header, path, file_sha256(path))


def _nnunet_plans(planned_dataset: Path) -> tuple[dict, dict]:
    folder = planned_dataset / "nnUNet_preprocessed" / "Dataset501_PhantomLungTumour"
    return json.loads((folder / "nnUNetPlans.json").read_text()), json.loads((folder / "dataset.json").read_text())


@pytest.mark.parametrize(("encoder", "expected_patch"), [("vit_tiny", [32, 56, 56]), ("swin_tiny", [32, 64, 64])])
def test_configuration_matches_pretraining(encoder: str, expected_patch: list[int], planned_dataset: Path,
                                           tmp_path: Path, fake_pretraining: ModuleType) -> None:
    path = tmp_path / "ckpt.pth"
    fake_pretraining.write_fake_checkpoint(path, encoder, patch_size=(32, 64, 64), spacing=PRETRAIN_SPACING)
    source, dataset_json = _nnunet_plans(planned_dataset)
    untouched = copy.deepcopy(source)
    plans, notes = transfer_configuration(source, dataset_json, _block(path), "nnsslPlans")
    assert source == untouched
    conf = plans["configurations"]["3d_fullres"]
    assert list(plans["configurations"]) == ["3d_fullres"] and plans["plans_name"] == "nnsslPlans"
    assert conf["spacing"] == list(PRETRAIN_SPACING)
    assert conf["median_image_size_in_voxels"] == [26, 51, 51]  # 32*2/2.5, 64*1/1.25
    assert conf["patch_size"] == expected_patch  # pretraining's (32, 64, 64), capped to the images, on the grid
    assert conf["data_identifier"] == "nnsslPlans_3d_fullres"
    assert conf["normalization_schemes"] == ["CTNormalization"]
    stats = plans["foreground_intensity_properties_per_channel"]["0"]
    assert stats["mean"] == fake_pretraining.BODY_STATS.mean and stats["percentile_99_5"] == 700.0
    assert conf["architecture"]["network_class_name"].endswith("PrimusSkip" if encoder == "vit_tiny" else "SwinUNETR")
    block = PretrainedBlock.from_dict(conf[PRETRAINED_KEY], "test")
    assert block.sha256 == file_sha256(path) and block.encoder_name == encoder
    assert any("spacing" in n for n in notes)


def test_cli_writes_plans_link_and_preprocesses_with_pretraining_stats(
        nnunet_env: dict[str, Path], fake_pretraining: ModuleType) -> None:
    checkpoint = fake_pretraining.write_fake_run(nnunet_env["nnssl_results"], "vit_tiny", patch_size=(32, 64, 64))
    assert main(["-d", "501", "-pd", "500", "-np", "1"]) == 0
    folder = nnunet_env["dataset"]
    plans = json.loads((folder / "nnsslPlans.json").read_text())
    assert plans["configurations"]["3d_fullres"][PRETRAINED_KEY]["checkpoint"] == str(checkpoint.resolve())
    link = read_link(folder)
    assert link is not None and link.sha256 == file_sha256(checkpoint)
    dataset = nnUNetDatasetBlosc2(str(folder / "nnsslPlans_3d_fullres"))
    data, seg, _, _ = dataset.load_case(dataset.identifiers[0])
    data = np.asarray(data[:])
    stats = fake_pretraining.BODY_STATS
    # nnU-Net's CTNormalization with the *pretraining* statistics: clip to its percentiles, z-score with its mean/std
    low = (stats.percentile_00_5 - stats.mean) / stats.std
    high = (stats.percentile_99_5 - stats.mean) / stats.std
    assert data.min() == pytest.approx(low, abs=1e-4)  # air (-1024 HU) clipped at -1000 HU
    assert data.max() <= high + 1e-4


def test_errors_name_the_fix(nnunet_env: dict[str, Path], fake_pretraining: ModuleType,
                             capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["-d", "501", "-pd", "500"])
    assert exit_info.value.code == 2
    assert "nnssl: error: no pretraining results for dataset 500" in capsys.readouterr().err
    (nnunet_env["nnssl_results"] / "Dataset500_PhantomCTUnlabeled" / "mae__vit_tiny__nnsslPlans").mkdir(parents=True)
    with pytest.raises(SystemExit):
        main(["-d", "501", "-pd", "500"])
    assert "have no checkpoint_final.pth yet" in capsys.readouterr().err
    fake_pretraining.write_fake_run(nnunet_env["nnssl_results"], "vit_tiny")
    fake_pretraining.write_fake_run(nnunet_env["nnssl_results"], "swin_tiny")
    with pytest.raises(SystemExit):
        main(["-d", "501", "-pd", "500", "--no-preprocess"])
    assert "choose one with -m METHOD -e ENCODER" in capsys.readouterr().err
    assert main(["-d", "501", "-pd", "500", "-e", "swin_tiny", "--no-preprocess"]) == 0
    with pytest.raises(SystemExit):
        main(["-d", "501", "-pd", "500", "-e", "swin_tiny", "-p", "nnUNetPlans", "--no-preprocess"])
    assert "would overwrite the nnU-Net plans it starts from" in capsys.readouterr().err
    (nnunet_env["dataset"] / "nnUNetPlans.json").unlink()
    with pytest.raises(NnsslError, match=r"nnUNetPlans.json; run `nnUNetv2_plan_and_preprocess -d 501 -c 3d_fullres"):
        main.__wrapped__(["-d", "501", "-pd", "500", "-e", "swin_tiny"])
