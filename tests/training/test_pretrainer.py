"""The pretraining loop through its CLI entry, in-process: --c equivalence, checkpoint contents, every method."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nnssl.cli.pretrain import main
from nnssl.methods.registry import check_compatible, list_methods
from nnssl.models.registry import build_encoder_from_config
from nnssl.training.checkpoint import CHECKPOINT_FINAL, CHECKPOINT_LATEST, load_checkpoint
from nnssl.training.lock import LOCK_FILE
from nnssl.training.pretrainer import LOG_FILE, PROGRESS_PNG, Pretrainer, step_seed

TINY = ["-d", "990", "-e", "vit_tiny", "--device", "cpu", "--batch-size", "1", "--iters-per-epoch", "2",
        "--warmup-epochs", "1", "--lr", "1e-3", "-np", "0"]


def _run_folder(results: Path, method: str = "mae", encoder: str = "vit_tiny") -> Path:
    return results / "Dataset990_TinyBody" / f"{method}__{encoder}__nnsslPlans"


def test_continue_reproduces_uninterrupted_run(tiny_preprocessed: Path, nnssl_env: dict[str, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    results = nnssl_env["nnssl_results"]
    assert main([*TINY, "--epochs", "4", "--seed", "7"]) == 0
    straight = load_checkpoint(_run_folder(results) / CHECKPOINT_FINAL)["history"]["step_loss"]
    assert len(straight) == 8

    # Same run in a fresh folder, interrupted after epoch 2 (checkpoint written), then continued with --c.
    monkeypatch.setenv("nnssl_results", str(results / "second"))
    original = Pretrainer._end_of_epoch

    def interrupt_after_two(self: Pretrainer, epochs_done: int, output) -> None:
        original(self, epochs_done, output)
        if epochs_done == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Pretrainer, "_end_of_epoch", interrupt_after_two)
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY, "--epochs", "4", "--seed", "7"])
    assert exit_info.value.code == 130
    folder = _run_folder(results / "second")
    assert load_checkpoint(folder / CHECKPOINT_LATEST)["epoch"] == 2
    assert not (folder / CHECKPOINT_FINAL).exists() and not (folder / LOCK_FILE).exists()
    monkeypatch.setattr(Pretrainer, "_end_of_epoch", original)
    # Continued with background workers this time: batches must not depend on the worker count.
    assert main(["-d", "990", "-e", "vit_tiny", "--c", "-np", "2"]) == 0
    continued = load_checkpoint(folder / CHECKPOINT_FINAL)["history"]["step_loss"]
    np.testing.assert_allclose(continued, straight, rtol=1e-5, atol=1e-6)
    assert "continuing from checkpoint_latest.pth after epoch 2" in (folder / LOG_FILE).read_text()


def test_checkpoint_header_and_encoder_weights(tiny_preprocessed: Path, nnssl_env: dict[str, Path]) -> None:
    assert main([*TINY, "--epochs", "2", "--method-kwargs", "mask_ratio=0.5"]) == 0
    folder = _run_folder(nnssl_env["nnssl_results"])
    for name in (CHECKPOINT_FINAL, CHECKPOINT_LATEST, LOG_FILE, PROGRESS_PNG, "recon_epoch_001.png",
                 "recon_epoch_002.png", "pretrain_config.json"):
        assert (folder / name).is_file(), name
    raw = torch.load(folder / CHECKPOINT_FINAL, map_location="cpu", weights_only=True)
    header = raw["header"]
    assert header["method"]["name"] == "mae" and header["method"]["kwargs"]["mask_ratio"] == 0.5
    assert header["patch_size"] == [32, 32, 32] and header["token_size"] == [8, 8, 8]
    assert header["num_input_channels"] == 1 and header["plans"]["dataset_name"] == "Dataset990_TinyBody"
    assert raw["epoch"] == 2 and len(raw["history"]["epoch_loss"]) == 2
    encoder = build_encoder_from_config(header["encoder"])
    encoder.load_state_dict(raw["encoder_state_dict"], strict=True)
    trained_key = next(k for k in raw["encoder_state_dict"] if k.endswith("weight"))
    assert torch.equal(raw["model_state_dict"][f"encoder.{trained_key}"], raw["encoder_state_dict"][trained_key])


def _encoder_for(method: str) -> str:
    for encoder in ("vit_tiny", "swin_tiny"):
        try:
            check_compatible(method, encoder)
            return encoder
        except Exception:  # noqa: BLE001 - refused pair, try the next tiny encoder
            continue
    pytest.skip(f"no tiny encoder works with {method}")


@pytest.mark.parametrize("method", list_methods())
def test_every_method_trains_through_the_loop(method: str, tiny_preprocessed: Path,
                                              nnssl_env: dict[str, Path]) -> None:
    encoder = _encoder_for(method)
    args = ["-d", "990", "-m", method, "-e", encoder, "--device", "cpu", "--batch-size", "2", "--iters-per-epoch",
            "1", "--epochs", "2", "--warmup-epochs", "0", "-np", "0", "--accumulate", "2"]
    assert main(args) == 0
    history = load_checkpoint(_run_folder(nnssl_env["nnssl_results"], method, encoder) / CHECKPOINT_FINAL)["history"]
    assert len(history["step_loss"]) == 2 and all(np.isfinite(history["step_loss"]))


def test_step_seed_differs_by_rank_and_step() -> None:
    seeds = {step_seed(1, rank, step) for rank in range(3) for step in range(50)}
    assert len(seeds) == 150 and all(0 <= s < 2**63 for s in seeds)
    assert step_seed(1, 0, 0) == step_seed(1, 0, 0)
