"""Pretraining throughput: samples/s, tokens/s, peak memory and achieved GFLOP/s of one training step.

Every registered method runs on the ViT-S-size encoder (``primus_s``) through the real ``Pretrainer.train_step``
(autocast, backward, clipping, AdamW); MONAI's ``MaskedAutoEncoderViT`` and ``ViTAutoEnc`` at matched width, depth,
heads and token size run the same step as the reference. The CPU's (or GPU's) matmul peak is measured in the same run,
and the data loader's samples/s is compared with what the model consumes.

    .venv/bin/python benchmarks/pretrain_throughput.py                 # CPU, 64^3 and 96^3
    .venv/bin/python benchmarks/pretrain_throughput.py --quick         # tiny smoke run (32^3, one timed step)
    .venv/bin/python benchmarks/pretrain_throughput.py --device cuda   # GPU, bf16 autocast

Prints a table and writes ``benchmark_output/pretrain_throughput_<device>.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.networks.nets import MaskedAutoEncoderViT, ViTAutoEnc
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nnssl.augment.transforms import build_pretraining_transforms
from nnssl.config.enums import Normalization
from nnssl.config.plans import Plans
from nnssl.config.pretrain import PretrainConfig
from nnssl.data.loader import BodyCropDataset, build_loader
from nnssl.methods.registry import check_compatible, list_methods
from nnssl.models.encoders.vit import PRIMUS_MLP_RATIO, VIT_VARIANTS
from nnssl.models.patchify import patchify
from nnssl.training.distributed import DistributedContext
from nnssl.training.pretrainer import AUTOCAST_DTYPE, FUSED_ADAMW_DEVICES, Pretrainer

ENCODER = "primus_s"
TOKEN = 8
MASK_RATIO = 0.75
# MONAI's ViTAutoEnc upsamples with two transposed convs of stride sqrt(patch), so its patch must be a square number;
# 16 is the nearest to our 8 (it sees 8x fewer tokens: compare its samples/s with that in mind).
VITAUTOENC_PATCH = 16
MLP_GATES = 1.5  # SwiGLU has 3 matrices where MONAI's MLP has 2: matched parameters/FLOPs need 1.5x its hidden width
REF_DECODER = {"decoder_hidden_size": 192, "decoder_mlp_dim": 768, "decoder_num_layers": 2, "decoder_num_heads": 4}
MB = 2**20
RSS_POLL_S = 0.005
TARGETS = {"mae_vs_simmim": 3.0, "ours_vs_monai_mae": 1.0, "loader_vs_model": 2.0, "mae_vs_simmim_cpu_time": 3.0,
           "ours_vs_monai_mae_cpu_time": 1.0}


# ---- measurements ------------------------------------------------------------------------------------------------
def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> tuple[float, float]:
    """Best-of (GFLOP per wall second, GFLOP per process-CPU second) of an n x n matmul: the reference for the
    achieved GFLOP/s. The CPU-second figure (all threads summed) is what a shared, busy machine cannot distort."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best, best_cpu = math.inf, math.inf
    for _ in range(repeats + 1):  # first call warms up
        _sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        a @ b
        _sync(device)
        best, best_cpu = min(best, time.perf_counter() - start), min(best_cpu, time.process_time() - cpu_start)
    return 2 * n**3 / best / 1e9, 2 * n**3 / best_cpu / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory of the block: CUDA ``max_memory_allocated``; on CPU the process RSS sampled every 5 ms (Linux),
    else ``ru_maxrss``. Reported as the increase over the level at entry."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mb, self._stop = device, 0.0, threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif Path("/proc/self/statm").exists():
            self._base = self._max = _rss_bytes()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        else:
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, _rss_bytes())
            time.sleep(RSS_POLL_S)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            peak = self._max
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak_mb = (peak - self._base) / MB


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one step (forward + backward). Attention runs on the math backend here, whose matmuls the counter sees
    (it has no formula for CPU flash attention); the FLOPs are the same."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> tuple[float, float]:
    """(median wall seconds, median process CPU seconds) per step over ``steps`` timed steps after ``warmup``. On a
    shared machine the CPU seconds are the steadier number (other jobs stretch wall time)."""
    for _ in range(warmup):
        step()
    times, cpu_times = [], []
    for _ in range(steps):
        _sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return float(np.median(times)), float(np.median(cpu_times))


def release_memory(device: torch.device) -> None:
    """Give freed memory back (CUDA cache; glibc heap) so the next model's peak starts from a clean level."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


# ---- models under test -------------------------------------------------------------------------------------------
def write_synthetic_dataset(root: Path, shape: tuple[int, int, int], cases: int) -> tuple[Plans, Path]:
    """Smooth 'body' volumes with noise in nnssl's preprocessed layout (for the loader and the Pretrainer)."""
    folder = root / "nnsslPlans_3d"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    grids = np.meshgrid(*(np.linspace(-1, 1, s, dtype=np.float32) for s in shape), indexing="ij")
    body = sum(g**2 for g in grids) < 0.8
    for i in range(cases):
        image = np.where(body, 0.5, -2.0).astype(np.float32) + rng.normal(0, 0.1, shape).astype(np.float32)
        locations = np.argwhere(body)[rng.choice(int(body.sum()), 2000, replace=False)].astype(np.int64)
        nnUNetDatasetBlosc2.save_case(image[None], body[None].astype(np.int8), {"body_locations": locations},
                                      str(folder / f"case_{i:03d}"), chunks=(1, 64, 64, 64), blocks=(1, 16, 16, 16))
    plans = Plans(dataset_name="Dataset999_Bench", spacing=(1.0, 1.0, 1.0), normalization=Normalization.ZSCORE,
                  intensity_stats=None, patch_size=(64, 64, 64), downstream_patch_size=(64, 64, 64),
                  median_shape=shape, original_median_spacing=(1.0, 1.0, 1.0))
    return plans, folder


def ours_step(method: str, size: int, batch: int, device: torch.device, plans: Plans, data: Path,
              out: Path) -> tuple[Callable[[], None], int]:
    """The real ``Pretrainer.train_step`` on random batches; returns (step, parameter count)."""
    kwargs = {"mask_ratio": MASK_RATIO} if method in ("mae", "simmim") else {}
    config = PretrainConfig(dataset_name=plans.dataset_name, method=method, encoder=ENCODER, batch_size=batch,
                            patch_size=(size,) * 3, device=device.type, warmup_epochs=0, epochs=1,
                            method_kwargs=kwargs)
    trainer = Pretrainer(config, plans, data, out, DistributedContext(0, 1, 0, device))
    x = torch.randn(batch, 1, size, size, size)
    counter = iter(range(10**9))

    def step() -> None:
        trainer.train_step(iter([x]), next(counter))

    return step, sum(p.numel() for p in trainer.method.parameters())


def reference_step(kind: str, size: int, batch: int, device: torch.device) -> tuple[Callable[[], None], int]:
    """MONAI reference at matched width/depth/heads/token size, trained with the same step (autocast, clip, the same
    fused AdamW), so the ratio compares the models plus our loop's overhead."""
    variant = VIT_VARIANTS[ENCODER]
    common = dict(in_channels=1, img_size=(size,) * 3, patch_size=TOKEN, hidden_size=variant["embed_dim"],
                  mlp_dim=int(variant["embed_dim"] * PRIMUS_MLP_RATIO * MLP_GATES), num_layers=variant["depth"],
                  num_heads=variant["num_heads"])
    if kind == "monai_mae":
        model = MaskedAutoEncoderViT(**common, masking_ratio=MASK_RATIO, **REF_DECODER).to(device)
    else:
        model = ViTAutoEnc(**{**common, "patch_size": VITAUTOENC_PATCH}).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type in FUSED_ADAMW_DEVICES)
    dtype = AUTOCAST_DTYPE.get(device.type)
    x = torch.randn(batch, 1, size, size, size)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        xb = x.to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if kind == "monai_mae":
                pred, mask = model(xb)  # (B, N, P), (B, N) 1 = hidden
                err = (pred.float() - patchify(xb, (TOKEN,) * 3)) ** 2
                loss = (err.mean(-1) * mask).sum() / mask.sum()
            else:
                recon, _ = model(xb)
                loss = torch.nn.functional.mse_loss(recon.float(), xb)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss.item()

    return step, sum(p.numel() for p in model.parameters())


def loader_samples_per_s(plans: Plans, data: Path, size: int, batch: int, workers: int, samples: int) -> float:
    """Batches per second x batch size of the real loader (crop + augmentation + collate), without a model."""
    dataset = BodyCropDataset(data, (size,) * 3, seed=0, p_body_crop=0.9,
                              transform=build_pretraining_transforms((size,) * 3))
    batches = max(2, samples // batch)
    loader = iter(build_loader(dataset, batch, 0, 1, 0, batches + 1, workers, pin_memory=False))
    next(loader)  # workers started, first batch out
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * batch / (time.perf_counter() - start)


# ---- main --------------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    peak_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak, peak_per_cpu_s = matmul_peak_gflops(device, peak_dtype, args.matmul_size, repeats=args.matmul_repeats)
    print(f"matmul peak ({peak_dtype}, {args.matmul_size}^2) on {device}: {peak:.1f} GFLOP/s wall, "
          f"{peak_per_cpu_s:.1f} GFLOP per CPU-second; torch threads {torch.get_num_threads()}", flush=True)
    rows: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        plans, data = write_synthetic_dataset(Path(tmp) / "data", tuple(args.case_shape), cases=4)
        methods = [m for m in list_methods() if _compatible(m)]
        for size in args.sizes:
            candidates: list[tuple[str, Callable[[], tuple[Callable[[], None], int]]]] = [
                (m, lambda m=m, size=size: ours_step(m, size, args.batch_size, device, plans, data, Path(tmp) / "out"))
                for m in methods]
            candidates += [(k, lambda k=k, size=size: reference_step(k, size, args.batch_size, device))
                           for k in ("monai_mae", "monai_vitautoenc")]
            by_name = {}
            for name, make in candidates:
                torch.manual_seed(0)
                release_memory(device)
                with PeakMemory(device) as peak_memory:  # model, optimizer state, activations of a step
                    step, params = make()
                    seconds, cpu_seconds = time_steps(step, device, args.warmup, args.steps)
                memory = peak_memory.peak_mb
                flops = count_flops(step)
                token = VITAUTOENC_PATCH if name == "monai_vitautoenc" else TOKEN
                tokens = (size // token) ** 3
                row = {"model": name, "size": size, "batch": args.batch_size, "token": token,
                       "params_m": params / 1e6, "step_s": seconds, "step_cpu_s": cpu_seconds,
                       "samples_per_s": args.batch_size / seconds,
                       "tokens_per_s": args.batch_size * tokens / seconds, "peak_mem_mb": memory,
                       "gflop_per_step": flops / 1e9, "achieved_gflops": flops / 1e9 / seconds,
                       "gflop_per_cpu_s": flops / 1e9 / cpu_seconds,
                       # GPU: wall time against the wall-time peak; CPU: CPU-seconds against CPU-seconds (robust to
                       # other jobs on a shared machine).
                       "pct_of_peak": 100 * (flops / 1e9 / seconds / peak if device.type == "cuda"
                                             else flops / 1e9 / cpu_seconds / peak_per_cpu_s)}
                rows.append(row)
                by_name[name] = row
                print(_format_row(row), flush=True)
                del step
                release_memory(device)
            if "mae" in by_name and "simmim" in by_name:
                ratios[f"mae_vs_simmim@{size}"] = by_name["simmim"]["step_s"] / by_name["mae"]["step_s"]
                ratios[f"mae_vs_simmim_cpu_time@{size}"] = (by_name["simmim"]["step_cpu_s"]
                                                            / by_name["mae"]["step_cpu_s"])
            if "mae" in by_name:
                ratios[f"ours_vs_monai_mae@{size}"] = (by_name["mae"]["samples_per_s"]
                                                       / by_name["monai_mae"]["samples_per_s"])
                ratios[f"ours_vs_monai_mae_cpu_time@{size}"] = (by_name["monai_mae"]["step_cpu_s"]
                                                                / by_name["mae"]["step_cpu_s"])
                loader = loader_samples_per_s(plans, data, size, args.batch_size, args.loader_workers,
                                              args.loader_samples)
                ratios[f"loader_vs_model@{size}"] = loader / by_name["mae"]["samples_per_s"]
                print(f"loader {size}^3: {loader:.1f} samples/s with {args.loader_workers} worker(s)", flush=True)
    return {"device": str(device), "device_name": _device_name(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
            "platform": platform.platform(), "matmul_peak_gflops": peak,
            "matmul_peak_gflop_per_cpu_s": peak_per_cpu_s, "encoder": ENCODER, "rows": rows,
            "ratios": ratios, "targets": TARGETS, "args": vars(args)}


def _compatible(method: str) -> bool:
    try:
        check_compatible(method, ENCODER)
        return True
    except Exception:  # noqa: BLE001 - a refused pair is simply not benchmarked
        return False


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


HEADER = (f"{'model':<18}{'size':>5}{'B':>3}{'tok':>4}{'params M':>9}{'step s':>9}{'cpu s':>8}{'samples/s':>10}"
          f"{'tokens/s':>10}"
          f"{'peak MB':>9}{'GFLOP/st':>9}{'GFLOP/s':>9}{'GF/cpu-s':>9}{'% peak':>7}")


def _format_row(r: dict[str, Any]) -> str:
    return (f"{r['model']:<18}{r['size']:>5}{r['batch']:>3}{r['token']:>4}{r['params_m']:>9.1f}{r['step_s']:>9.3f}"
            f"{r['step_cpu_s']:>8.2f}{r['samples_per_s']:>10.2f}{r['tokens_per_s']:>10.0f}{r['peak_mem_mb']:>9.0f}"
            f"{r['gflop_per_step']:>9.1f}{r['achieved_gflops']:>9.1f}{r['gflop_per_cpu_s']:>9.1f}"
            f"{r['pct_of_peak']:>7.1f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="cubic patch sizes (default 64 96)")
    p.add_argument("--batch-size", type=int, default=None, help="default 1 on CPU, 8 on CUDA")
    p.add_argument("--steps", type=int, default=None, help="timed steps (median reported; default 3 CPU, 10 CUDA)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--loader-workers", type=int, default=2)
    p.add_argument("--loader-samples", type=int, default=24)
    p.add_argument("--case-shape", type=int, nargs=3, default=[128, 192, 192], help="synthetic case size (Z Y X)")
    p.add_argument("--matmul-size", type=int, default=None, help="default 2048 CPU, 8192 CUDA")
    p.add_argument("--matmul-repeats", type=int, default=8, help="best-of repeats of the peak matmul")
    p.add_argument("--quick", action="store_true", help="tiny smoke run: 32^3, one timed step")
    p.add_argument("--output", type=Path, default=None, help="JSON path (default benchmark_output/...)")
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    args.sizes = args.sizes or ([32] if args.quick else [64, 96])
    args.batch_size = args.batch_size or (8 if cuda else 1)
    args.steps = args.steps or (1 if args.quick else 10 if cuda else 3)
    args.matmul_size = args.matmul_size or (8192 if cuda else 1024 if args.quick else 2048)
    if args.quick:
        args.case_shape, args.loader_samples = [64, 96, 96], 8
    print(HEADER)
    result = run(args)
    print("\n" + HEADER)
    for row in result["rows"]:
        print(_format_row(row))
    print("\nratios (target):")
    for key, value in result["ratios"].items():
        target = TARGETS[key.split("@")[0]]
        print(f"  {key:<28}{value:>7.2f}x  (target >= {target}x: {'met' if value >= target else 'NOT met'})")
    output = args.output or Path("benchmark_output") / f"pretrain_throughput_{args.device}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
