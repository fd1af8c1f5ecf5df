"""The SSL trainers inside nnU-Net, in process: found by name, plans adapted, weights loaded, trained, predicted."""
from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.run.run_training import get_trainer_from_args

from nnssl.cli.transfer_plans import main as transfer_plans_main
from nnssl.config.pretrained import PretrainedBlock, file_sha256, link_path, write_link
from nnssl.errors import NnsslError
from nnssl.training.checkpoint import load_pretrained_encoder
from nnssl_trainers.base import FOREGROUND_PRIOR, SSLTrainerBase, init_output_prior, respect_thread_limit

CPU = torch.device("cpu")
ODD_PATCH = [28, 60, 68]  # not on the 8-voxel ViT grid: rounds to (24, 56, 64)


def _link(env: dict[str, Path], checkpoint: Path) -> PretrainedBlock:
    header, _ = load_pretrained_encoder(checkpoint)
    block = PretrainedBlock.from_header(header, checkpoint, file_sha256(checkpoint))
    write_link(env["dataset"], block)
    return block


def _set_nnunet_patch(env: dict[str, Path], patch: list[int]) -> None:
    plans_file = env["dataset"] / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["3d_fullres"]["patch_size"] = patch
    plans_file.write_text(json.dumps(plans))


def _trainer(name: str, plans: str = "nnUNetPlans", fold: int = 0) -> SSLTrainerBase:
    """Exactly what ``nnUNetv2_train 501 3d_fullres 0 -tr NAME -p PLANS -device cpu`` constructs."""
    return get_trainer_from_args("501", "3d_fullres", fold, name, plans, device=CPU)


def test_default_plans_pretrained_vs_scratch(nnunet_env: dict[str, Path], fake_pretraining: ModuleType) -> None:
    checkpoint = nnunet_env["nnssl_results"] / "ckpt.pth"
    state = fake_pretraining.write_fake_checkpoint(checkpoint, "vit_tiny", patch_size=(32, 64, 64))
    _link(nnunet_env, checkpoint)
    _set_nnunet_patch(nnunet_env, ODD_PATCH)
    trainer = _trainer("SSLViTTrainer_tiny")
    assert trainer.configuration_manager.patch_size == [24, 56, 64]
    assert trainer.plans_manager.plans["configurations"]["3d_fullres"]["patch_size"] == [24, 56, 64]
    assert any("differ" in w for w in trainer.adaptation.warnings)  # phantom tumour stats vs body stats
    report = trainer.load_pretrained_weights()
    assert report is not None and report.loaded_fraction == 1.0
    weights = trainer.network.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in state.items() if k != "eva.pos_embed")
    assert weights["eva.pos_embed"].shape[1] == 3 * 7 * 8

    scratch = _trainer("SSLViTTrainer_scratch_tiny")
    assert scratch.load_pretrained_weights() is None
    scratch_weights = scratch.network.state_dict()
    assert scratch_weights.keys() == weights.keys()  # same architecture ...
    assert not torch.equal(scratch_weights["eva.blocks.0.attn.proj.weight"], state["eva.blocks.0.attn.proj.weight"])


def test_train_continue_and_predict_with_changed_patch(nnunet_env: dict[str, Path],
                                                       fake_pretraining: ModuleType) -> None:
    checkpoint = nnunet_env["nnssl_results"] / "ckpt.pth"
    fake_pretraining.write_fake_checkpoint(checkpoint, "vit_tiny", patch_size=(32, 64, 64))
    _link(nnunet_env, checkpoint)
    _set_nnunet_patch(nnunet_env, ODD_PATCH)
    trainer = _trainer("SSLViTTrainer_tiny")
    trainer.run_training()
    model_folder = Path(trainer.output_folder_base)
    saved = json.loads((model_folder / "plans.json").read_text())["configurations"]["3d_fullres"]
    assert saved["patch_size"] == [24, 56, 64] and "pretrained" in saved and "architecture" in saved

    resumed = _trainer("SSLViTTrainer_tiny")  # --c: nnU-Net reloads network, optimizer (our param groups) and epoch
    resumed.load_checkpoint(str(Path(trainer.output_folder) / "checkpoint_final.pth"))
    assert resumed.current_epoch == trainer.num_epochs
    assert [g["name"] for g in resumed.optimizer.param_groups] == [g["name"] for g in trainer.optimizer.param_groups]

    checkpoint.unlink()  # prediction needs the results folder only, not the SSL checkpoint
    predictor = nnUNetPredictor(device=CPU, perform_everything_on_device=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=(0,))
    assert list(predictor.configuration_manager.patch_size) == [24, 56, 64]
    image = sorted((nnunet_env["raw_dataset"] / "imagesTs").glob("*.nii.gz"))[0]
    itk = sitk.ReadImage(str(image))
    array = sitk.GetArrayFromImage(itk)[None].astype(np.float32)  # (C, Z, Y, X)
    properties = {"spacing": list(itk.GetSpacing())[::-1]}
    seg = predictor.predict_single_npy_array(array, properties, None, None, False)
    assert seg.shape == array.shape[1:]


def test_matched_plans_train_without_the_link(nnunet_env: dict[str, Path], fake_pretraining: ModuleType) -> None:
    fake_pretraining.write_fake_run(nnunet_env["nnssl_results"], "vit_tiny", patch_size=(32, 64, 64))
    assert transfer_plans_main(["-d", "501", "-pd", "500", "-np", "1"]) == 0
    link_path(nnunet_env["dataset"]).unlink()  # -p nnsslPlans carries its own pretrained block
    trainer = _trainer("SSLViTTrainer_tiny", plans="nnsslPlans")
    assert trainer.configuration_manager.data_identifier == "nnsslPlans_3d_fullres"
    assert not trainer.adaptation.warnings  # spacing and CT statistics match the pretraining
    trainer.run_training()
    assert trainer.pretrained_report is not None and trainer.pretrained_report.loaded_fraction == 1.0
    assert (Path(trainer.output_folder) / "checkpoint_final.pth").is_file()


def test_a_results_folder_keeps_its_encoder(nnunet_env: dict[str, Path], fake_pretraining: ModuleType) -> None:
    """Folds, --c and --val of one results folder use the encoder its first fold started from, whatever the link
    says later: a different link is refused, a deleted one is not needed."""
    first = nnunet_env["nnssl_results"] / "first.pth"
    fake_pretraining.write_fake_checkpoint(first, "vit_tiny", patch_size=(32, 64, 64))
    _link(nnunet_env, first)
    trainer = _trainer("SSLViTTrainer_tiny")
    folder = Path(trainer.output_folder_base)  # nnU-Net's __init__ created it
    (folder / "plans.json").write_text(json.dumps(trainer.plans_manager.plans))  # what on_train_start saves

    other = nnunet_env["nnssl_results"] / "other.pth"
    fake_pretraining.write_fake_checkpoint(other, "vit_tiny", patch_size=(32, 32, 32))
    _link(nnunet_env, other)
    with pytest.raises(NnsslError, match=r"holds SSLViTTrainer_tiny folds fine-tuned from .*first\.pth.*Link the "
                                         r"original again \(`nnssl_transfer_plans -d Dataset501_\w+ --checkpoint"):
        _trainer("SSLViTTrainer_tiny", fold=1)
    assert _trainer("SSLViTTrainer_scratch_tiny").adaptation.block.checkpoint == str(other.resolve())  # own folder

    link_path(nnunet_env["dataset"]).unlink()
    again = _trainer("SSLViTTrainer_tiny", fold=1)
    assert again.adaptation.block.checkpoint == str(first.resolve())
    assert again.load_pretrained_weights().loaded_fraction == 1.0


def test_scratch_ignores_a_link_of_the_other_family(nnunet_env: dict[str, Path],
                                                    fake_pretraining: ModuleType) -> None:
    checkpoint = nnunet_env["nnssl_results"] / "swin.pth"
    fake_pretraining.write_fake_checkpoint(checkpoint, "swin_tiny", patch_size=(32, 64, 64))
    _link(nnunet_env, checkpoint)
    scratch = _trainer("SSLViTTrainer_scratch_tiny")
    assert scratch.adaptation.block is None and scratch.adaptation.architecture.family == "vit"


def test_transposed_plans_are_warned_about(nnunet_env: dict[str, Path], fake_pretraining: ModuleType) -> None:
    checkpoint = nnunet_env["nnssl_results"] / "ckpt.pth"
    fake_pretraining.write_fake_checkpoint(checkpoint, "vit_tiny", patch_size=(32, 64, 64))
    _link(nnunet_env, checkpoint)
    assert not any("transpose" in w for w in _trainer("SSLViTTrainer_tiny").adaptation.warnings)
    plans_file = nnunet_env["dataset"] / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    plans["transpose_forward"] = plans["transpose_backward"] = [0, 2, 1]
    plans_file.write_text(json.dumps(plans))
    assert any("transpose the axes ([0, 2, 1])" in w for w in _trainer("SSLViTTrainer_tiny").adaptation.warnings)


def test_2d_configuration_is_refused_clearly(nnunet_env: dict[str, Path]) -> None:
    with pytest.raises(NnsslError, match=r"fine-tunes a 3D encoder, but configuration '2d'.*is 2D; train 3d_fullres"):
        get_trainer_from_args("501", "2d", 0, "SSLViTTrainer_scratch_tiny", "nnUNetPlans", device=CPU)


def test_missing_link_names_the_command(nnunet_env: dict[str, Path]) -> None:
    with pytest.raises(NnsslError, match=r"none is linked.*nnssl_transfer_plans -d Dataset501.*SSLViTTrainer_scratch"):
        _trainer("SSLViTTrainer")
    assert _trainer("SSLViTTrainer_scratch_tiny").adaptation.block is None  # scratch needs no link


def test_wrong_encoder_type_is_refused(nnunet_env: dict[str, Path], fake_pretraining: ModuleType) -> None:
    checkpoint = nnunet_env["nnssl_results"] / "swin.pth"
    fake_pretraining.write_fake_checkpoint(checkpoint, "swin_tiny", patch_size=(32, 64, 64))
    _link(nnunet_env, checkpoint)
    with pytest.raises(NnsslError, match=r"SSLViTTrainer fine-tunes VIT encoders.*swin_tiny.*use SSLSwinTrainer"):
        _trainer("SSLViTTrainer")


def test_swin_trainer_loads_and_steps_with_adapted_channels(nnunet_env: dict[str, Path],
                                                           fake_pretraining: ModuleType) -> None:
    checkpoint = nnunet_env["nnssl_results"] / "swin.pth"
    state = fake_pretraining.write_fake_checkpoint(checkpoint, "swin_tiny", patch_size=(32, 64, 64), in_channels=2)
    _link(nnunet_env, checkpoint)
    trainer = _trainer("SSLSwinTrainer")  # the full schedule starts with the decoder-only stage
    assert any("2 in pretraining" in w for w in trainer.adaptation.warnings)  # 1-channel CT, 2-channel encoder
    report = trainer.load_pretrained_weights()
    assert any("patch_embed" in a for a in report.adapted)
    weights = trainer.network.state_dict()
    qkv = "layers1.0.blocks.0.attn.qkv.weight"
    assert torch.equal(weights[f"swinViT.{qkv}"], state[qkv])
    patch = trainer.configuration_manager.patch_size
    batch = {"data": torch.randn(2, 1, *patch), "target": torch.randint(0, 2, (2, 1, *patch)).float()}
    before = {k: v.clone() for k, v in weights.items()}
    loss = trainer.train_step(batch)["loss"]
    assert np.isfinite(loss)
    after = trainer.network.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and not any(k.startswith("swinViT.") for k in changed)  # stage 1: only the decoder learns


@pytest.mark.parametrize("name", ["SSLViTTrainer_scratch_tiny", "SSLSwinTrainer_scratch_tiny"])
def test_output_starts_at_the_foreground_prior(nnunet_env: dict[str, Path], name: str) -> None:
    trainer = _trainer(name)
    trainer.initialize()
    network = trainer.unwrapped_network()
    layer = init_output_prior(network, 2)
    patch = trainer.configuration_manager.patch_size
    with torch.no_grad():
        network.eval()
        probabilities = torch.softmax(network(torch.randn(1, 1, *patch)), 1)
    # random weights spread the logits around the bias: the mean stays near the prior, far from 50/50
    assert probabilities[:, 1].mean() < 5 * FOREGROUND_PRIOR, layer
    assert dict(network.named_modules())[layer].bias[0] == 0
    three = torch.nn.Sequential(torch.nn.Conv3d(4, 8, 3), torch.nn.Conv3d(8, 3, 1))
    assert init_output_prior(three, 3) == "1"
    assert torch.allclose(torch.softmax(three[1].bias, 0)[1:], torch.tensor(FOREGROUND_PRIOR))
    with pytest.raises(NnsslError, match="no output convolution with 5 channels"):
        init_output_prior(three, 5)


def test_pretrained_weights_flag_keeps_the_loaded_network(nnunet_env: dict[str, Path], fake_pretraining: ModuleType,
                                                           tmp_path: Path) -> None:
    """``nnUNetv2_train ... -pretrained_weights FILE`` loads a whole network after initialize(); it must survive."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights as nnunet_load_pretrained_weights

    checkpoint = nnunet_env["nnssl_results"] / "ckpt.pth"
    fake_pretraining.write_fake_checkpoint(checkpoint, "vit_tiny", patch_size=(32, 64, 64))
    _link(nnunet_env, checkpoint)
    donor = _trainer("SSLViTTrainer_scratch_tiny")
    donor.initialize()
    donor.save_checkpoint(str(tmp_path / "donor.pth"))

    trainer = _trainer("SSLViTTrainer_tiny")
    trainer.initialize()
    nnunet_load_pretrained_weights(trainer.network, str(tmp_path / "donor.pth"))  # what run_training does
    trainer.init_fresh_weights()
    assert trainer.pretrained_report is None
    donor_weights = donor.network.state_dict()
    assert all(torch.equal(v, donor_weights[k]) for k, v in trainer.network.state_dict().items())

    fresh = _trainer("SSLViTTrainer_tiny")  # without the flag: the linked encoder and the output prior ...
    fresh.load_pretrained_weights()  # ... also after our own (public) load
    fresh.init_fresh_weights()
    assert fresh.pretrained_report is not None and fresh.pretrained_report.loaded_fraction == 1.0
    output_bias = fresh.network.decoder.head.bias
    assert torch.allclose(torch.softmax(output_bias, 0)[1], torch.tensor(FOREGROUND_PRIOR))
    assert not torch.equal(fresh.network.state_dict()["eva.blocks.0.attn.proj.weight"],
                           donor_weights["eva.blocks.0.attn.proj.weight"])


def test_output_prior_for_many_classes_and_for_regions() -> None:
    many = torch.nn.Conv3d(4, 150, 1)  # 149 foreground classes: 1 % each would leave no room for background
    init_output_prior(many, 150)
    probabilities = torch.softmax(many.bias, 0)
    assert probabilities[0] >= 0.49 and torch.allclose(probabilities[1:], probabilities[1])
    regions = torch.nn.Conv3d(4, 3, 1)  # nnU-Net regions: sigmoid per channel, no background channel
    init_output_prior(regions, 3, regions=True)
    assert torch.allclose(torch.sigmoid(regions.bias), torch.tensor(FOREGROUND_PRIOR))


def test_cpu_training_keeps_the_thread_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # what `nnUNetv2_train -device cpu` does: every CPU
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert respect_thread_limit(CPU) == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(2)
        assert respect_thread_limit(torch.device("cuda")) is None and torch.get_num_threads() == 2
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert respect_thread_limit(CPU) is None and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
