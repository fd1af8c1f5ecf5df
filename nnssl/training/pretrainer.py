"""The pretraining loop: one training step (STYLE §12), epochs, checkpoints, previews, DDP.

Methods implement only ``compute_loss``; device moves, autocast, backward, gradient accumulation, clipping and the
optimizer/scheduler step happen once, in :meth:`Pretrainer.train_step`. Hooks to override in a subclass, as in
nnUNetTrainer: :meth:`~Pretrainer.build_network`, :meth:`~Pretrainer.configure_optimizers`,
:meth:`~Pretrainer.get_training_transforms`.

Reproducibility: sample ``i`` depends only on ``(seed, i)`` (``nnssl.data.loader``) and step ``s`` of rank ``r`` masks
with a generator seeded from ``(seed, r, s)``; checkpoints hold every RNG state. A run continued with ``--c`` therefore
follows the uninterrupted run's loss trajectory (bit-for-bit on CPU with the same thread count).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed import all_gather_object
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from nnssl import __version__
from nnssl.augment.transforms import build_pretraining_transforms
from nnssl.config.plans import Plans
from nnssl.config.pretrain import PRETRAIN_CONFIG_FILE, PretrainConfig
from nnssl.data.loader import BodyCropDataset, build_loader
from nnssl.errors import NnsslError
from nnssl.methods.base import MethodOutput
from nnssl.methods.registry import build_method
from nnssl.models.registry import build_encoder
from nnssl.training.checkpoint import (
    CHECKPOINT_FINAL,
    CHECKPOINT_LATEST,
    FORMAT_VERSION,
    build_header,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from nnssl.training.distributed import DistributedContext, broadcast_object, mean_over_ranks
from nnssl.training.lock import RunLock
from nnssl.training.previews import save_progress_plot, save_reconstruction_preview
from nnssl.training.schedules import build_scheduler

# Mixed precision per device type; bf16 needs no loss scaling. Devices not listed train in fp32.
AUTOCAST_DTYPE = {"cuda": torch.bfloat16}
# Parameters without weight decay besides biases and norm weights (ndim <= 1), as in MAE/timm.
NO_DECAY_NAME_PARTS = ("pos_embed", "mask_token", "cls_token", "register_tokens")
# Devices with torch's fused AdamW kernel: one kernel for all tensors instead of a loop over ~300 parameter tensors
# (37 -> 13 ms per step for primus_s on one CPU thread).
FUSED_ADAMW_DEVICES = ("cpu", "cuda")
LOG_FILE = "training_log.txt"
PROGRESS_PNG = "progress.png"
RECON_PNG = "recon_epoch_{epoch:03d}.png"
_SEED_BITS = 63


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the method's generator at optimizer step ``step`` on ``rank`` (independent streams per triple)."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0]) >> (64 - _SEED_BITS)


def seed_global_rngs(seed: int) -> None:
    """Seed python, numpy and torch (all devices) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def empty_history() -> dict[str, Any]:
    return {"step_loss": [], "epoch_loss": [], "epoch_lr": [], "epoch_samples_per_s": [], "epoch_time_s": [],
            "epoch_parts": {}}


class RunLog:
    """Rank 0 appends timestamped lines to ``training_log.txt`` and prints them above the tqdm bar."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        tqdm.write(line)
        with open(self.path, "a") as f:
            f.write(line + "\n")


class Pretrainer:
    """One pretraining run of ``config`` on the preprocessed data in ``data_folder``, writing to ``output_folder``.

    Args:
        config: run settings.
        plans: the dataset's pretraining plans (channels, planned patch size; stored in the checkpoint header).
        data_folder: ``nnssl_preprocessed/DatasetXXX_Name/<plans>_3d``.
        output_folder: ``nnssl_results/DatasetXXX_Name/<method>__<encoder>__<plans>``.
        ctx: rank, world size and device (from ``init_distributed``).
    """

    def __init__(self, config: PretrainConfig, plans: Plans, data_folder: Path, output_folder: Path,
                 ctx: DistributedContext) -> None:
        self.config, self.data_folder, self.output_folder, self.ctx = config, Path(data_folder), output_folder, ctx
        self.device = ctx.device
        self.patch_size: tuple[int, int, int] = tuple(config.patch_size or plans.patch_size)  # type: ignore[assignment]
        self.plans = dataclasses.replace(plans, patch_size=self.patch_size)
        self.log = RunLog(output_folder / LOG_FILE, ctx.is_main)
        self.method = self.build_network().to(self.device)
        seed_global_rngs(config.seed + ctx.rank)  # per-rank streams for anything drawing from the global RNGs
        self.model: nn.Module = self.method
        if ctx.is_distributed:
            # find_unused_parameters: some methods leave heads unused on some steps (e.g. a toggled loss part).
            self.model = DistributedDataParallel(self.method, device_ids=[self.device.index]
                                                 if self.device.type == "cuda" else None,
                                                 find_unused_parameters=True)
        self.total_steps = config.epochs * config.iters_per_epoch
        self.optimizer = self.configure_optimizers()
        warmup_steps = config.warmup_epochs * config.iters_per_epoch
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, warmup_steps, config.schedule,
                                         config.poly_exponent)
        self.autocast_dtype = AUTOCAST_DTYPE.get(self.device.type)
        self.start_epoch = 0
        self.history = empty_history()

    # ---- hooks -------------------------------------------------------------------------------------------------------
    def build_network(self) -> nn.Module:
        """Encoder from the registry, wrapped by the method. Seeded with the run seed so every rank starts equal."""
        torch.manual_seed(self.config.seed)
        encoder = build_encoder(self.config.encoder, self.plans.num_input_channels, self.patch_size,
                                **self.config.encoder_kwargs)
        return build_method(self.config.method, encoder, **self.config.method_kwargs)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW; no weight decay on biases, norm weights, position embeddings and learned tokens."""
        decay, no_decay = [], []
        for name, param in self.method.named_parameters():
            if not param.requires_grad:
                continue
            skip = param.ndim <= 1 or any(part in name for part in NO_DECAY_NAME_PARTS)
            (no_decay if skip else decay).append(param)
        groups = [{"params": decay, "weight_decay": self.config.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.config.lr, betas=tuple(self.config.betas),
                                 fused=self.device.type in FUSED_ADAMW_DEVICES)

    def get_training_transforms(self) -> Any:
        return build_pretraining_transforms(self.patch_size) if self.config.augment else None

    # ---- the one training step ---------------------------------------------------------------------------------------
    def train_step(self, batches: Iterator[torch.Tensor], step: int) -> tuple[float, dict[str, float], MethodOutput]:
        """One optimizer step over ``accumulate`` micro-batches.

        Args:
            batches: yields (B, C, Z, Y, X) float32 CPU tensors.
            step: global optimizer step (0-based), seeds the method's generator.

        Returns:
            (loss averaged over micro-batches and ranks, loss parts likewise, the last micro-batch's output).

        Raises:
            NnsslError: the loss is NaN or infinite.
        """
        cfg = self.config
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        generator = torch.Generator(device=self.device).manual_seed(step_seed(cfg.seed, self.ctx.rank, step))
        loss_sum = torch.zeros((), device=self.device)
        parts_sum: dict[str, torch.Tensor] = {}
        for micro in range(cfg.accumulate):
            x = next(batches).to(self.device, non_blocking=True)  # (B, C, Z, Y, X)
            last = micro == cfg.accumulate - 1
            # Under DDP, gradients are all-reduced only on the last micro-batch.
            sync = contextlib.nullcontext() if last or not self.ctx.is_distributed else self.model.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                    enabled=self.autocast_dtype is not None):
                    output: MethodOutput = self.model(x, generator)
                (output.loss / cfg.accumulate).backward()
            loss_sum += output.loss.detach().float()
            for key, value in output.parts.items():
                parts_sum[key] = parts_sum.get(key, 0.0) + value.detach().float()
        if cfg.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), cfg.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        loss = mean_over_ranks(loss_sum / cfg.accumulate, self.ctx).item()
        if not math.isfinite(loss):
            raise NnsslError(f"loss became {loss} at step {step} (lr {self.optimizer.param_groups[0]['lr']:.3g}); "
                             f"lower --lr or raise --warmup-epochs, then restart (or --c from {CHECKPOINT_LATEST})")
        parts = {k: mean_over_ranks(v / cfg.accumulate, self.ctx).item() for k, v in parts_sum.items()}
        return loss, parts, output

    # ---- state -------------------------------------------------------------------------------------------------------
    def checkpoint(self, epochs_done: int, rng_states: list[dict[str, Any]]) -> dict[str, Any]:
        """The checkpoint dict of ``nnssl.training.checkpoint`` after ``epochs_done`` finished epochs."""
        encoder = self.method.encoder
        header = build_header(self.method.config(), encoder.config(), self.plans.to_dict(),
                              encoder.transfer.to_dict(), self.patch_size, encoder.token_size,
                              self.plans.num_input_channels)
        decoder = self.method.transferable_decoder()
        return {"format_version": FORMAT_VERSION, "header": header, "encoder_state_dict": encoder.state_dict(),
                "decoder_state_dict": decoder.state_dict() if decoder is not None else None,
                "model_state_dict": self.method.state_dict(), "optimizer_state_dict": self.optimizer.state_dict(),
                "scheduler_state_dict": self.scheduler.state_dict(), "scaler_state_dict": None,
                "epoch": epochs_done, "rng_state": {**rng_states[0], "per_rank": rng_states},
                "history": self.history, "config": self.config.to_dict()}

    def load_state(self, checkpoint: dict[str, Any]) -> None:
        """Restore model, optimizer, scheduler, history, epoch and this rank's RNG states for ``--c``."""
        self.method.load_state_dict(checkpoint["model_state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        self.scheduler.load_state_dict(checkpoint["scheduler_state_dict"])
        self.history = checkpoint["history"]
        self.start_epoch = int(checkpoint["epoch"])
        per_rank = checkpoint["rng_state"].get("per_rank") or [checkpoint["rng_state"]]
        restore_rng_state(per_rank[self.ctx.rank] if len(per_rank) == self.ctx.world_size else per_rank[0])

    def _gather_rng_states(self) -> list[dict[str, Any]]:
        state = capture_rng_state()
        if not self.ctx.is_distributed:
            return [state]
        gathered: list[Any] = [None] * self.ctx.world_size
        all_gather_object(gathered, state)
        return [{k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in s.items()} for s in gathered]

    # ---- epochs ------------------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Train from ``start_epoch`` to ``config.epochs``, checkpointing and previewing on rank 0."""
        cfg, ctx = self.config, self.ctx
        per_step = cfg.accumulate
        dataset = BodyCropDataset(self.data_folder, self.patch_size, cfg.seed, cfg.p_body_crop,
                                  self.get_training_transforms())
        loader = build_loader(dataset, cfg.batch_size, ctx.rank, ctx.world_size,
                              start=self.start_epoch * cfg.iters_per_epoch * per_step,
                              stop=cfg.epochs * cfg.iters_per_epoch * per_step, num_workers=cfg.num_workers,
                              pin_memory=self.device.type == "cuda")
        batches = iter(loader)
        global_batch = cfg.batch_size * ctx.world_size * cfg.accumulate
        self.log(f"pretraining {cfg.method} on {cfg.encoder}, patch {self.patch_size}, device {self.device}, "
                 f"{ctx.world_size} process(es); global batch {global_batch} = batch {cfg.batch_size} x "
                 f"{ctx.world_size} x accumulate {cfg.accumulate}; epochs {self.start_epoch + 1}..{cfg.epochs} of "
                 f"{cfg.iters_per_epoch} steps; lr {cfg.lr:g}, {cfg.warmup_epochs} warm-up epoch(s), then "
                 f"{cfg.schedule}")
        for epoch in range(self.start_epoch, cfg.epochs):
            start = time.perf_counter()
            losses: list[float] = []
            parts_sum: dict[str, float] = {}
            bar = tqdm(range(cfg.iters_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not ctx.is_main,
                       leave=False, dynamic_ncols=True)
            output = None
            for i in bar:
                loss, parts, output = self.train_step(batches, epoch * cfg.iters_per_epoch + i)
                losses.append(loss)
                for key, value in parts.items():
                    parts_sum[key] = parts_sum.get(key, 0.0) + value
                bar.set_postfix(loss=f"{loss:.4f}")
            bar.close()
            elapsed = time.perf_counter() - start
            self._record_epoch(losses, parts_sum, elapsed, global_batch)
            self._end_of_epoch(epoch + 1, output)
        states = self._gather_rng_states()  # collective: every rank takes part
        if ctx.is_main:
            save_checkpoint(self.checkpoint(cfg.epochs, states), self.output_folder / CHECKPOINT_FINAL)
        self.log(f"finished: {self.output_folder / CHECKPOINT_FINAL}")

    def _record_epoch(self, losses: list[float], parts_sum: dict[str, float], elapsed: float,
                      global_batch: int) -> None:
        h = self.history
        h["step_loss"].extend(losses)
        h["epoch_loss"].append(float(np.mean(losses)))
        h["epoch_lr"].append(float(self.optimizer.param_groups[0]["lr"]))
        h["epoch_samples_per_s"].append(len(losses) * global_batch / elapsed)
        h["epoch_time_s"].append(elapsed)
        for key, value in parts_sum.items():
            h["epoch_parts"].setdefault(key, []).append(value / len(losses))
        parts = " ".join(f"{k} {v[-1]:.4f}" for k, v in h["epoch_parts"].items())
        self.log(f"epoch {len(h['epoch_loss'])}: loss {h['epoch_loss'][-1]:.4f} {parts} lr {h['epoch_lr'][-1]:.3g} "
                 f"{h['epoch_samples_per_s'][-1]:.2f} samples/s {elapsed:.1f} s")

    def _end_of_epoch(self, epochs_done: int, output: MethodOutput | None) -> None:
        cfg = self.config
        last = epochs_done == cfg.epochs
        if epochs_done % cfg.save_every == 0 or last:
            states = self._gather_rng_states()  # collective: every rank takes part
            if self.ctx.is_main:
                save_checkpoint(self.checkpoint(epochs_done, states), self.output_folder / CHECKPOINT_LATEST)
        if self.ctx.is_main and (epochs_done % cfg.preview_every == 0 or last or epochs_done == 1):
            save_progress_plot(self.history, self.output_folder / PROGRESS_PNG)
            if output is not None:
                save_reconstruction_preview(output.previews, self.output_folder / RECON_PNG.format(epoch=epochs_done),
                                            title=f"{cfg.method} / {cfg.encoder}, epoch {epochs_done}")


def _finished_epochs(path: Path) -> int:
    return int(load_checkpoint(path)["epoch"]) if path.is_file() else -1


def run_pretraining(config: PretrainConfig, plans: Plans, data_folder: Path, output_folder: Path,
                    ctx: DistributedContext, continue_training: bool = False) -> Path:
    """Lock the run folder, set up or restore the run, train, and return the final checkpoint's path.

    Raises:
        NnsslError: another run holds the folder; ``--c`` without anything to continue; a finished or started run in
            the folder without ``--c``.
    """
    output_folder = Path(output_folder)
    lock = RunLock(output_folder)
    error = None
    if ctx.is_main:
        try:
            lock.acquire()
        except NnsslError as err:
            error = str(err)
    error = broadcast_object(error, ctx)
    if error:
        raise NnsslError(error)
    try:
        latest, final = output_folder / CHECKPOINT_LATEST, output_folder / CHECKPOINT_FINAL
        if not continue_training and (latest.exists() or final.exists()):
            raise NnsslError(f"{output_folder} already holds a run; continue it with --c or delete the folder")
        if continue_training and _finished_epochs(final) >= config.epochs:
            if ctx.is_main:
                print(f"nnssl: run in {output_folder} is already finished ({config.epochs} epochs); "
                      "raise --epochs to train longer")
            return final
        resume_from = latest if latest.is_file() else final
        if continue_training and not resume_from.is_file():
            raise NnsslError(f"nothing to continue in {output_folder} (no {CHECKPOINT_LATEST}); start without --c")
        trainer = Pretrainer(config, plans, data_folder, output_folder, ctx)
        if ctx.is_main:
            config.save(output_folder / PRETRAIN_CONFIG_FILE)
        if continue_training:
            trainer.load_state(load_checkpoint(resume_from))  # CPU; load_state_dict moves to the device
            if trainer.start_epoch >= config.epochs:
                raise NnsslError(f"{resume_from} is already at epoch {trainer.start_epoch}; pass --epochs larger "
                                 "than that to train on")
            trainer.log(f"continuing from {resume_from.name} after epoch {trainer.start_epoch} "
                        f"(nnssl {__version__})")
        trainer.run()
        return final
    finally:
        if ctx.is_main:
            lock.release()
